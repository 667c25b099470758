//! `[kafka]`: the brokers, the topic template and its fallback, the record key, extra
//! headers, the user's librdkafka properties and the SASL password.
//!
//! Owns what the producer is told, already checked against the delivery guarantee
//! (`properties`); it never builds a client (`kafka::client` does). The password is read
//! here, once, into a `Secret`: it must never reach an error message or `Debug` output.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use toml::Spanned;

use super::{MAX_TIMEOUT_MS, template};
use crate::config::Secret;
use crate::config::check::{Locator, check_topic_name, is_valid_field_name};
use crate::config::properties::check_user_property;
use crate::config::raw::RawKafka;

/// A header value: literal text and `{FIELD}` parts (a missing field omits the header).
pub type HeaderTemplate = Vec<TopicPart>;

/// One piece of a topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPart {
    Literal(String),
    Field(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: Vec<TopicPart>,
    /// Used when a field named by the topic template is missing from an entry.
    pub topic_fallback: Option<String>,
    /// Names of the fields whose first values, joined by `key_separator`, key the record
    /// (`key_field` is the one-field form); empty: no key.
    pub key_fields: Vec<String>,
    pub key_separator: String,
    /// Extra record headers: name and template.
    pub headers: Vec<(String, HeaderTemplate)>,
    /// librdkafka properties given by the user, already checked against the guarantee.
    pub properties: BTreeMap<String, String>,
    pub connect_timeout_ms: u64,
    /// The SASL password read from `sasl_password_file` or a systemd credential; given to
    /// librdkafka as `sasl.password` by `kafka::client` and shown nowhere.
    pub sasl_password: Option<Secret>,
    /// Where it came from, when it is a file (for `check`'s permission warning).
    pub sasl_password_file: Option<PathBuf>,
    /// `aws_msk_iam = true`: SASL/OAUTHBEARER with AWS MSK IAM tokens, signed for this
    /// region (`aws_region`, else `AWS_REGION` / `AWS_DEFAULT_REGION` when the config is
    /// loaded) with the credentials of the usual AWS chain.
    pub msk_iam_region: Option<String>,
}

impl KafkaConfig {
    /// The topic when the template has no fields.
    pub fn fixed_topic(&self) -> Option<&str> {
        match self.topic.as_slice() {
            [TopicPart::Literal(t)] => Some(t),
            _ => None,
        }
    }
}

pub(super) fn kafka(
    raw: RawKafka,
    span: std::ops::Range<usize>,
    at: &Locator,
) -> Result<KafkaConfig> {
    let Some(brokers) = raw.brokers else {
        return at.err(
            "kafka.brokers",
            span,
            "missing: give the bootstrap brokers, e.g. \"127.0.0.1:9092\"",
        );
    };
    let brokers = at.with("kafka.brokers", brokers, |b| {
        if b.trim().is_empty() {
            Err("must not be empty".to_string())
        } else {
            Ok(b)
        }
    })?;
    let (template, topic_fallback) = topic(raw.topic, raw.topic_fallback, span, at)?;
    let key_fields = key_fields(raw.key_field, raw.key_fields, at)?;
    let key_separator = raw
        .key_separator
        .map_or_else(|| "/".to_string(), Spanned::into_inner);
    let headers = headers(raw.headers, at)?;
    let mut properties = properties(raw.properties, at)?;
    partitioner(raw.partitioner, &mut properties, at)?;

    let sasl_password_file = raw.sasl_password_file.as_ref().map(|f| f.get_ref().clone());
    let sasl_password = password(
        at,
        raw.sasl_password_file,
        raw.sasl_password_credential,
        &properties,
    )?;
    let msk_iam_region = msk_iam(
        raw.aws_msk_iam,
        raw.aws_region,
        &properties,
        sasl_password.is_some(),
        at,
    )?;

    Ok(KafkaConfig {
        brokers,
        topic: template,
        topic_fallback,
        key_fields,
        key_separator,
        headers,
        properties,
        sasl_password,
        sasl_password_file,
        msk_iam_region,
        connect_timeout_ms: at.range(
            "kafka.connect_timeout_ms",
            raw.connect_timeout_ms,
            30_000,
            100,
            MAX_TIMEOUT_MS,
        )?,
    })
}

/// `aws_msk_iam` and `aws_region`, and how OAUTHBEARER may be configured. Every client the
/// agent makes asks it for tokens (`kafka::client::AuthContext`), so OAUTHBEARER is either
/// OIDC (librdkafka's own tokens, which it never asks the agent for) or MSK IAM; librdkafka's
/// testing-only unsecured tokens would be asked of the agent, which has none to give.
fn msk_iam(
    flag: Option<Spanned<bool>>,
    region: Option<Spanned<String>>,
    properties: &BTreeMap<String, String>,
    has_password: bool,
    at: &Locator,
) -> Result<Option<String>> {
    let prop = |k: &str| properties.get(k).map(|v| v.to_ascii_lowercase());
    let mechanism = crate::config::properties::sasl_mechanism(properties);
    let oidc = prop("sasl.oauthbearer.method").as_deref() == Some("oidc");
    if prop("enable.sasl.oauthbearer.unsecure.jwt").as_deref() == Some("true") {
        bail!(
            "kafka.properties.\"enable.sasl.oauthbearer.unsecure.jwt\": librdkafka's unsecured tokens are for testing and not supported; use OIDC (sasl.oauthbearer.method = \"oidc\") or kafka.aws_msk_iam"
        );
    }
    let enabled = flag.as_ref().is_some_and(|f| *f.get_ref());
    let Some(flag) = flag.filter(|_| enabled) else {
        if let Some(r) = region {
            return at.err(
                "kafka.aws_region",
                r.span(),
                "is only used with kafka.aws_msk_iam = true",
            );
        }
        if mechanism.as_deref() == Some("oauthbearer") && !oidc {
            bail!(
                "kafka.properties: sasl.mechanisms = \"OAUTHBEARER\" needs a token source: sasl.oauthbearer.method = \"oidc\" (with its client id and token endpoint), or kafka.aws_msk_iam = true"
            );
        }
        return Ok(None);
    };
    let span = flag.span();
    if let Some(m) = mechanism.filter(|m| m != "oauthbearer") {
        return at.err("kafka.aws_msk_iam", span, format!("MSK IAM authenticates with SASL/OAUTHBEARER; kafka.properties sets sasl.mechanisms = {m:?}: remove it"));
    }
    if let Some(p) = prop("security.protocol").filter(|p| !p.starts_with("sasl_")) {
        return at.err(
            "kafka.aws_msk_iam",
            span,
            format!("MSK IAM is a SASL mechanism; kafka.properties sets security.protocol = {p:?}: use \"sasl_ssl\" (the default with aws_msk_iam) or remove it"),
        );
    }
    for key in [
        "sasl.oauthbearer.method",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.token.endpoint.url",
    ] {
        if properties.contains_key(key) {
            return at.err(
                "kafka.aws_msk_iam",
                span.clone(),
                format!(
                    "the agent makes the MSK IAM tokens itself; remove kafka.properties.{key:?}"
                ),
            );
        }
    }
    if has_password {
        return at.err("kafka.aws_msk_iam", span, "MSK IAM signs with AWS credentials, not a password: remove kafka.sasl_password_file / sasl_password_credential");
    }
    let configured = region.map(|r| (r.span(), r.into_inner()));
    let env = |k: &str| std::env::var(k).ok();
    match aws_region(configured.as_ref().map(|(_, r)| r.as_str()), &env) {
        Ok(r) => Ok(Some(r)),
        Err(e) => match configured {
            Some((span, _)) => at.err("kafka.aws_region", span, e),
            None => at.err(
                "kafka.aws_msk_iam",
                span,
                format!("{e}: set kafka.aws_region"),
            ),
        },
    }
}

/// The region MSK IAM tokens are signed for: `configured`, else `AWS_REGION`, else
/// `AWS_DEFAULT_REGION` (the SDKs' order). It goes into a host name and the signature's
/// scope as it is, so only a region's characters are accepted.
fn aws_region(
    configured: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    let region = configured
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .or_else(|| var("AWS_REGION"))
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .ok_or(
            "no AWS region: neither kafka.aws_region nor AWS_REGION / AWS_DEFAULT_REGION is set",
        )?;
    let name_like = region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_like {
        return Err(format!(
            "{region:?} is not an AWS region name (lower-case letters, digits and '-')"
        ));
    }
    Ok(region)
}

/// kafka.topic (required) and kafka.topic_fallback, which a template with fields needs.
fn topic(
    topic: Option<Spanned<String>>,
    topic_fallback: Option<Spanned<String>>,
    span: std::ops::Range<usize>,
    at: &Locator,
) -> Result<(Vec<TopicPart>, Option<String>)> {
    let Some(topic) = topic else {
        return at.err(
            "kafka.topic",
            span,
            "missing: give a topic name or a template such as \"journal-{_SYSTEMD_UNIT}\"",
        );
    };
    let topic_span = topic.span();
    let template = at.with("kafka.topic", topic, |t| parse_topic_template(&t))?;
    let topic_fallback = topic_fallback
        .map(|f| {
            at.with("kafka.topic_fallback", f, |f| {
                check_topic_name(&f).map(|()| f)
            })
        })
        .transpose()?;
    if template.iter().any(|p| matches!(p, TopicPart::Field(_))) && topic_fallback.is_none() {
        return at.err(
            "kafka.topic",
            topic_span,
            "a template with {FIELD} needs kafka.topic_fallback for entries that lack the field",
        );
    }
    Ok((template, topic_fallback))
}

/// kafka.key_field (one field, or "none") or kafka.key_fields, not both.
fn key_fields(
    key_field: Option<Spanned<String>>,
    key_fields: Option<Spanned<Vec<String>>>,
    at: &Locator,
) -> Result<Vec<String>> {
    let key_field = match key_field {
        None => None,
        Some(k) => at.with("kafka.key_field", k, |k| match k.as_str() {
            "" | "none" => Ok(None),
            name if is_valid_field_name(name) => Ok(Some(k)),
            _ => Err(format!(
                "{k:?} is not a journal field name (use \"none\" for no key)"
            )),
        })?,
    };
    Ok(match (key_field, key_fields) {
        (Some(_), Some(k)) => {
            return at.err(
                "kafka.key_fields",
                k.span(),
                "give kafka.key_field or kafka.key_fields, not both",
            );
        }
        (Some(k), None) => vec![k],
        (None, Some(k)) => at.with("kafka.key_fields", k, |k| {
            match k.iter().find(|f| !is_valid_field_name(f)) {
                Some(bad) => Err(format!("{bad:?} is not a journal field name")),
                None => Ok(k),
            }
        })?,
        (None, None) => Vec::new(),
    })
}

/// kafka.headers: names outside the agent's own, values journal templates.
fn headers(
    raw: BTreeMap<String, Spanned<String>>,
    at: &Locator,
) -> Result<Vec<(String, HeaderTemplate)>> {
    let mut headers = Vec::new();
    for (name, value) in raw {
        let key = format!("kafka.headers.\"{name}\"");
        let template = at.with(&key, value, |v| {
            if name.is_empty()
                || name.starts_with("journal-")
                || name.starts_with("journald-kafka")
            {
                return Err(format!(
                    "{name:?}: header names starting with journal- or journald-kafka are the agent's own (docs/format.md)"
                ));
            }
            template_parts(&v, "header")
        })?;
        headers.push((name, template));
    }
    Ok(headers)
}

/// kafka.properties as librdkafka's text values, each checked against the guarantee.
fn properties(
    raw: BTreeMap<String, Spanned<toml::Value>>,
    at: &Locator,
) -> Result<BTreeMap<String, String>> {
    let mut properties = BTreeMap::new();
    for (name, value) in raw {
        let key = format!("kafka.properties.\"{name}\"");
        let text = at.with(&key, value, |v| {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(format!(
                        "expected a string, number or boolean, found {}",
                        other.type_str()
                    ));
                }
            };
            check_user_property(&name, &text).map(|()| text)
        })?;
        properties.insert(name, text);
    }
    Ok(properties)
}

/// kafka.partitioner, the one property with a key of its own: into `properties`, unless
/// they set it too.
fn partitioner(
    p: Option<Spanned<String>>,
    properties: &mut BTreeMap<String, String>,
    at: &Locator,
) -> Result<()> {
    let Some(p) = p else {
        return Ok(());
    };
    const CHOICES: &[&str] = &[
        "random",
        "consistent",
        "consistent_random",
        "murmur2",
        "murmur2_random",
        "fnv1a",
        "fnv1a_random",
    ];
    if properties.contains_key("partitioner") {
        return at.err(
            "kafka.partitioner",
            p.span(),
            "also set as kafka.properties.partitioner: give it once",
        );
    }
    let p = at.with("kafka.partitioner", p, |p| {
        if CHOICES.contains(&p.as_str()) {
            Ok(p)
        } else {
            Err(format!("{p:?}: choose one of {}", CHOICES.join(", ")))
        }
    })?;
    properties.insert("partitioner".to_string(), p);
    Ok(())
}

/// Literal text and `{FIELD}` parts of a journal template (`what` names it in errors): the
/// topic and header templates share this syntax.
fn template_parts(s: &str, what: &str) -> std::result::Result<Vec<TopicPart>, String> {
    let field = |name: &str| {
        if is_valid_field_name(name) {
            Ok(TopicPart::Field(name.to_string()))
        } else {
            Err(format!(
                "{{{name}}} in {what} template {s:?} is not a journal field name"
            ))
        }
    };
    template(s, what, field, TopicPart::Literal)
}

fn parse_topic_template(s: &str) -> std::result::Result<Vec<TopicPart>, String> {
    let parts = template_parts(s, "topic")?;
    if parts.is_empty() {
        return Err("must not be empty".into());
    }
    for p in &parts {
        if let TopicPart::Literal(l) = p {
            if l.contains('}') {
                return Err(format!("stray '}}' in topic template {s:?}"));
            }
            // Literal pieces must be valid on their own: the filled-in fields are sanitized.
            check_topic_name(l)?;
        }
    }
    Ok(parts)
}

/// The SASL password from a file or a systemd credential (`LoadCredential=`), so that it
/// need not sit in the config file. One source only: two would leave the reader guessing
/// which one the agent used.
fn password(
    at: &Locator,
    file: Option<Spanned<PathBuf>>,
    credential: Option<Spanned<String>>,
    properties: &BTreeMap<String, String>,
) -> Result<Option<Secret>> {
    let in_properties = properties.contains_key("sasl.password")
        || properties.contains_key("sasl.oauthbearer.client.secret");
    let read = |path: &std::path::Path| -> std::result::Result<Secret, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() {
            return Err(format!("the password file {} is empty", path.display()));
        }
        Ok(Secret::new(text.to_string()))
    };
    match (file, credential) {
        (Some(_), Some(c)) => at.err(
            "kafka.sasl_password_credential",
            c.span(),
            "set kafka.sasl_password_file or kafka.sasl_password_credential, not both",
        ),
        (Some(f), None) if in_properties => at.err(
            "kafka.sasl_password_file",
            f.span(),
            "kafka.properties.\"sasl.password\" is set too: keep the password in one place",
        ),
        (None, Some(c)) if in_properties => at.err(
            "kafka.sasl_password_credential",
            c.span(),
            "kafka.properties.\"sasl.password\" is set too: keep the password in one place",
        ),
        (Some(f), None) => at.with("kafka.sasl_password_file", f, |p| read(&p)).map(Some),
        (None, Some(c)) => at
            .with("kafka.sasl_password_credential", c, |name| {
                if name.is_empty() || name.contains('/') {
                    return Err(format!("{name:?} is not a credential name"));
                }
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!(
                        "$CREDENTIALS_DIRECTORY is not set: run under systemd with LoadCredential={name}:/path/to/password-file (the packaged unit shows how), or use kafka.sasl_password_file"
                    )
                })?;
                read(&std::path::Path::new(&dir).join(&name))
            })
            .map(Some),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::test_support::{MIN, err};

    #[test]
    fn the_password_comes_from_one_place_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x\n").unwrap();
        let file = format!("sasl_password_file = \"{}\"\n", pw.display());
        let both = err(&format!("{MIN}{file}sasl_password_credential = \"k\"\n"));
        assert!(both.contains("not both") && both.contains("line"), "{both}");
        let twice = err(&format!(
            "{MIN}{file}[kafka.properties]\n\"sasl.password\" = \"y\"\n"
        ));
        assert!(twice.contains("one place"), "{twice}");
        let missing = err(&format!("{MIN}sasl_password_file = \"/nonexistent/pw\"\n"));
        assert!(
            missing.contains("kafka.sasl_password_file") && missing.contains("/nonexistent/pw"),
            "{missing}"
        );
        std::fs::write(&pw, "\n").unwrap();
        assert!(err(&format!("{MIN}{file}")).contains("empty"));
        std::fs::write(&pw, "s3cret\n").unwrap();
        let c = parse(&format!("{MIN}{file}")).unwrap();
        assert_eq!(c.kafka.sasl_password.unwrap().expose(), "s3cret");
    }

    #[test]
    fn missing_kafka_section_or_keys() {
        assert!(err("").contains("missing section [kafka]"));
        let e = err("[kafka]\ntopic = \"t\"\n");
        assert!(e.contains("kafka.brokers") && e.contains("missing"), "{e}");
        let e = err("[kafka]\nbrokers = \"b:1\"\n");
        assert!(e.contains("kafka.topic") && e.contains("missing"), "{e}");
    }

    #[test]
    fn topic_templates() {
        let c = parse("[kafka]\nbrokers = \"b:1\"\ntopic = \"journal-{_SYSTEMD_UNIT}.x\"\ntopic_fallback = \"journal-other\"\n").unwrap();
        let e = err("[kafka]\nbrokers = \"b:1\"\ntopic = \"journal-{_SYSTEMD_UNIT}\"\n");
        assert!(
            e.contains("kafka.topic (line 3)") && e.contains("topic_fallback"),
            "{e}"
        );
        assert_eq!(
            c.kafka.topic,
            vec![
                TopicPart::Literal("journal-".into()),
                TopicPart::Field("_SYSTEMD_UNIT".into()),
                TopicPart::Literal(".x".into())
            ]
        );
        assert_eq!(c.kafka.fixed_topic(), None);
        for bad in ["journal-{x}", "journal-{_A", "bad topic", "a}b"] {
            let e = err(&format!("[kafka]\nbrokers = \"b:1\"\ntopic = \"{bad}\"\n"));
            assert!(e.contains("kafka.topic (line 3)"), "{bad}: {e}");
        }
        let e = err("[kafka]\nbrokers = \"b:1\"\ntopic = \"t\"\ntopic_fallback = \"a b\"\n");
        assert!(e.contains("kafka.topic_fallback (line 4)"), "{e}");
    }

    #[test]
    fn key_field() {
        let c = parse(&format!("{MIN}key_field = \"_HOSTNAME\"\n")).unwrap();
        assert_eq!(c.kafka.key_fields, ["_HOSTNAME"]);
        let c = parse(&format!("{MIN}key_field = \"none\"\n")).unwrap();
        assert!(c.kafka.key_fields.is_empty());
        let e = err(&format!("{MIN}key_field = \"host name\"\n"));
        assert!(e.contains("kafka.key_field (line 4)"), "{e}");
    }

    #[test]
    fn weakening_properties_are_refused_with_line() {
        for (k, v) in [
            ("acks", "\"1\""),
            ("request.required.acks", "0"),
            ("enable.idempotence", "false"),
            ("message.timeout.ms", "5000"),
            ("delivery.timeout.ms", "1000"),
            ("bootstrap.servers", "\"x:1\""),
            ("transactional.id", "\"t\""),
            ("delivery.report.only.error", "true"),
            ("delivery.timeout.ms", "600000"),
        ] {
            let e = err(&format!("{MIN}[kafka.properties]\n\"{k}\" = {v}\n"));
            assert!(
                e.contains(&format!("kafka.properties.\"{k}\" (line 5)")),
                "{k}: {e}"
            );
        }
        let c = parse(&format!(
            "{MIN}[kafka.properties]\n\"acks\" = \"all\"\n\"linger.ms\" = 100\n\"message.timeout.ms\" = 0\n\"compression.codec\" = \"zstd\"\n"
        ))
        .unwrap();
        assert_eq!(c.kafka.properties["linger.ms"], "100");
        let e = err(&format!("{MIN}[kafka.properties]\n\"linger.ms\" = [1]\n"));
        assert!(e.contains("expected a string"), "{e}");
        // A queue smaller than one record would wedge on the first large entry.
        let e = err(&format!(
            "{MIN}[kafka.properties]\n\"queue.buffering.max.kbytes\" = 500\n"
        ));
        assert!(
            e.contains("queue.buffering.max.kbytes") && e.contains("max_record_bytes"),
            "{e}"
        );
        assert!(
            parse(&format!(
                "{MIN}[kafka.properties]\n\"queue.buffering.max.kbytes\" = 2000\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn the_msk_iam_region_comes_from_the_configuration_then_the_environment() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let both = map(&[
            ("AWS_REGION", "eu-central-1"),
            ("AWS_DEFAULT_REGION", "us-west-2"),
        ]);
        let e = |k: &str| both.get(k).cloned();
        assert_eq!(aws_region(Some("ap-south-1"), &e).unwrap(), "ap-south-1");
        assert_eq!(aws_region(None, &e).unwrap(), "eu-central-1");
        assert_eq!(aws_region(Some(""), &e).unwrap(), "eu-central-1");
        let default = map(&[("AWS_DEFAULT_REGION", "us-west-2")]);
        let e = |k: &str| default.get(k).cloned();
        assert_eq!(aws_region(None, &e).unwrap(), "us-west-2");
        let none = |_: &str| -> Option<String> { None };
        assert!(aws_region(None, &none).is_err());
        assert!(aws_region(Some("evil.com/x"), &none).is_err());
        assert!(aws_region(Some("US-EAST-1"), &none).is_err());
    }

    #[test]
    fn oauthbearer_needs_oidc_or_msk_iam_and_msk_iam_takes_no_other_token_source() {
        let base = "[kafka]\nbrokers = \"b:1\"\ntopic = \"t\"\n";
        let ok = |extra: &str| parse(&format!("{base}{extra}"));
        let c = ok("aws_msk_iam = true\naws_region = \"eu-west-1\"\n").unwrap();
        assert_eq!(c.kafka.msk_iam_region.as_deref(), Some("eu-west-1"));
        for (extra, want) in [
            (
                "[kafka.properties]\n\"sasl.mechanisms\" = \"OAUTHBEARER\"\n",
                "needs a token source",
            ),
            (
                "[kafka.properties]\n\"enable.sasl.oauthbearer.unsecure.jwt\" = true\n",
                "for testing",
            ),
            (
                "aws_region = \"eu-west-1\"\n",
                "only used with kafka.aws_msk_iam",
            ),
            (
                "aws_msk_iam = true\naws_region = \"Eu\"\n",
                "not an AWS region name",
            ),
            (
                "aws_msk_iam = true\naws_region = \"eu-west-1\"\n[kafka.properties]\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n",
                "remove it",
            ),
            (
                "aws_msk_iam = true\naws_region = \"eu-west-1\"\n[kafka.properties]\n\"sasl.oauthbearer.method\" = \"oidc\"\n",
                "makes the MSK IAM tokens itself",
            ),
        ] {
            let e = format!("{:#}", ok(extra).unwrap_err());
            assert!(e.contains(want), "{extra}: {e}");
        }
    }
}
