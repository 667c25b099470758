//! Client configuration: the one place librdkafka is given its configuration, for the
//! producers and for every helper client (admin, cursor reader, `cat`, `verify`), so that
//! all of them reach the brokers the same way. Which properties each client gets is
//! `config::properties`'s rule; secrets reach librdkafka here, and only here.

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;
use crate::config::properties::{self, Producer};

fn client(props: properties::Properties) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (key, value) in props {
        c.set(key, value);
    }
    c
}

/// A producer's configuration (`config::properties::producer`), with the secrets.
pub(crate) fn producer_config(
    k: &KafkaConfig,
    p: &crate::config::PipelineConfig,
    which: Producer<'_>,
) -> ClientConfig {
    let mut c = client(properties::producer(k, p, which));
    auth(k, &mut c);
    c
}

/// Properties that concern reaching the brokers, for the helper clients (admin, cursor
/// reader, `cat`, `verify`) that must connect like the producer does.
pub(crate) fn connection_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = connection(&k.brokers, &k.properties);
    auth(k, &mut c);
    c
}

/// How a client authenticates: the password or client secret, or MSK IAM's settings.
fn auth(k: &KafkaConfig, c: &mut ClientConfig) {
    secrets(k, c);
    for (key, value) in properties::msk_iam(k) {
        c.set(key, value);
    }
}

/// Every client's context asks [`crate::kafka::msk_iam::oauth_token`] for OAUTHBEARER
/// tokens; librdkafka only asks when the client uses OAUTHBEARER without OIDC (OIDC tokens it
/// fetches itself), which the configuration allows only with `kafka.aws_msk_iam`.
pub(crate) struct AuthContext;

impl rdkafka::ClientContext for AuthContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        crate::kafka::msk_iam::oauth_token(config)
    }
}

impl rdkafka::consumer::ConsumerContext for AuthContext {}

/// Gives a new client its first MSK IAM token at once (nothing when `config` is not MSK
/// IAM's). librdkafka asks for tokens on the client's main queue, which rust-rdkafka serves
/// only when the application polls it: an admin client's never is, and a reader asks the
/// brokers for metadata before its first poll, so without this their first logins fail for
/// want of a token. Later tokens of a client that is polled come through its context.
pub(crate) fn give_token<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    config: &ClientConfig,
) -> anyhow::Result<()> {
    let Some(msk) = config
        .get("sasl.oauthbearer.config")
        .filter(|c| c.starts_with(properties::MSK_IAM_CONFIG))
    else {
        return Ok(());
    };
    let t = crate::kafka::msk_iam::oauth_token(Some(msk)).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Base64url and a fixed name: neither holds a NUL.
    let token = std::ffi::CString::new(t.token)?;
    let principal = std::ffi::CString::new(t.principal_name)?;
    let mut err = [0 as std::ffi::c_char; 512];
    // safety: `client` is borrowed for the call, so its handle is alive; `token` and
    // `principal` are NUL-terminated and outlive the call (librdkafka copies them); no
    // extensions (a null array of length 0); `err` is `err.len()` bytes, which librdkafka
    // NUL-terminates within that length.
    let code = unsafe {
        rdkafka::bindings::rd_kafka_oauthbearer_set_token(
            client.native_ptr(),
            token.as_ptr(),
            t.lifetime_ms,
            principal.as_ptr(),
            std::ptr::null_mut(),
            0,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if code != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // safety: librdkafka wrote a NUL-terminated message into `err` (zeroed before).
        let why = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
        anyhow::bail!(
            "librdkafka refused the MSK IAM token: {}",
            why.to_string_lossy()
        );
    }
    Ok(())
}

/// For the helper producers that send nothing (`check`'s transactional probe).
impl rdkafka::producer::ProducerContext for AuthContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// Secrets kept out of the config file reach librdkafka here, and only here. With
/// OAUTHBEARER (OIDC) the secret is the client secret sent to the token endpoint.
fn secrets(k: &KafkaConfig, c: &mut ClientConfig) {
    if let Some(p) = &k.sasl_password {
        let oauth = properties::sasl_mechanism(&k.properties).as_deref() == Some("oauthbearer");
        let key = if oauth {
            "sasl.oauthbearer.client.secret"
        } else {
            "sasl.password"
        };
        c.set(key, p.expose());
    }
}

/// [`connection_config`] from brokers and properties given apart (the command line).
pub(crate) fn connection<'a>(
    brokers: &str,
    properties: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> ClientConfig {
    client(properties::connection(brokers, properties))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn guarantee_settings_win_over_user_properties() {
        let c = config::for_tests(
            "[kafka.properties]\n\"linger.ms\" = 5\n\"compression.codec\" = \"zstd\"\n",
        );
        let cc = producer_config(&c.kafka, &c.pipeline, Producer::Journal);
        assert_eq!(cc.get("linger.ms"), Some("5"));
        assert_eq!(cc.get("compression.codec"), Some("zstd"));
        assert_eq!(cc.get("enable.idempotence"), Some("true"));
        assert_eq!(cc.get("acks"), Some("all"));
        assert_eq!(cc.get("bootstrap.servers"), Some("h:1"));
        assert_eq!(cc.get("message.timeout.ms"), Some("0"));
    }

    #[test]
    fn a_password_from_a_file_reaches_every_client_and_no_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let c = config::parse(&format!(
            "[kafka]\nbrokers = \"h:1\"\ntopic = \"t\"\nsasl_password_file = \"{}\"\n[kafka.properties]\n\"sasl.username\" = \"alice\"\n",
            pw.display()
        ))
        .unwrap();
        assert_eq!(
            producer_config(&c.kafka, &c.pipeline, Producer::Journal).get("sasl.password"),
            Some("s3cret")
        );
        assert_eq!(
            connection_config(&c.kafka).get("sasl.password"),
            Some("s3cret")
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn helper_clients_connect_like_the_producer() {
        let c = config::for_tests(
            "[kafka.properties]\n\"linger.ms\" = 5\n\"security.protocol\" = \"sasl_ssl\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n",
        );
        let cc = connection_config(&c.kafka);
        assert_eq!(cc.get("bootstrap.servers"), Some("h:1"));
        assert_eq!(cc.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cc.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(
            cc.get("linger.ms"),
            None,
            "producer tuning stays with the producer"
        );
    }
}
