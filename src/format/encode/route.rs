//! Where a record goes and what travels beside its value: the key, the extra headers and
//! the topic, each from the entry's fields.
//!
//! The rules for a topic name a template makes (`config::push_topic_part`,
//! `config::made_topic_usable`) live in `config`, so that the configuration check and the
//! encoder apply the same ones. A record must never go to a name those rules refuse or to
//! one of the agent's own topics: it goes to the fallback instead, and the caller counts it.

use super::Encoder;
use crate::config::TopicPart;
use crate::journal::Entry;

impl Encoder {
    /// The record key into `out`: the first values of the key fields joined by the
    /// separator (a missing field is an empty part). False: no key (none configured, or
    /// the entry has none of the fields).
    pub fn key(&self, e: &Entry, out: &mut Vec<u8>) -> bool {
        out.clear();
        let mut any = false;
        for (i, k) in self.key_fields.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(&self.key_separator);
            }
            if let Some(v) = e.get(k) {
                out.extend_from_slice(v);
                any = true;
            }
        }
        any
    }

    /// The configured extra headers for `e` (name, value); a header whose template names
    /// a field the entry lacks is left out.
    pub fn headers<'s>(&'s self, e: &Entry) -> Vec<(&'s str, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.headers.len());
        'headers: for (name, parts) in &self.headers {
            let mut v = Vec::new();
            for p in parts {
                match p {
                    TopicPart::Literal(l) => v.extend_from_slice(l.as_bytes()),
                    TopicPart::Field(f) => match e.get(f.as_bytes()) {
                        Some(x) => v.extend_from_slice(x),
                        None => continue 'headers,
                    },
                }
            }
            out.push((name.as_str(), v));
        }
        out
    }

    /// Adds the configured own topics of the agent to those a template may not make
    /// (the defaults are always there).
    pub(crate) fn reserve(mut self, delivery: &crate::config::DeliveryConfig) -> Encoder {
        self.reserved = delivery.reserved_topics();
        self
    }

    /// The record's topic. Returns false when a template made a name that may not be used
    /// (`config::made_topic_usable`: too long, "." or "..", or an internal "__" name) and
    /// the fallback was used instead.
    pub fn topic(&self, e: &Entry, out: &mut String) -> bool {
        let fallback = |out: &mut String| {
            out.clear();
            out.push_str(self.topic_fallback.as_deref().unwrap_or("journal"));
        };
        out.clear();
        // A fixed topic was checked with the configuration; only field values can make an
        // invalid name.
        let mut from_fields = false;
        for part in &self.topic {
            match part {
                TopicPart::Literal(l) => out.push_str(l),
                TopicPart::Field(f) => match e.get(f.as_bytes()) {
                    Some(v) if !v.is_empty() => {
                        from_fields = true;
                        crate::config::push_topic_part(out, v);
                    }
                    _ => {
                        fallback(out);
                        return true;
                    }
                },
            }
        }
        if from_fields && !crate::config::made_topic_usable(out, &self.reserved) {
            fallback(out);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Encoder;
    use crate::config;
    use crate::format::encode::tests::{decode, encoder, entry};
    use rmpv::Value;

    #[test]
    fn added_fields_composite_key_and_headers() {
        let mut enc = encoder(
            "[encoding.add_fields]\nENVIRONMENT = \"prod\"\nDC = \"fra1\"\n[kafka.headers]\nenv = \"prod\"\nwho = \"{_HOSTNAME}:{NOPE}\"\nhost = \"h-{_HOSTNAME}\"\n",
        );
        let e = entry(&[
            (b"MESSAGE", b"hi"),
            (b"_HOSTNAME", b"web-1"),
            (b"DC", b"own"),
        ]);
        let mut out = Vec::new();
        enc.encode(&e, &mut out);
        let m = decode(&out);
        let get = |k: &str| m.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("ENVIRONMENT"), Some(Value::from("prod")));
        // The entry's own DC wins without override.
        assert_eq!(get("DC"), Some(Value::from("own")));
        assert_eq!(m.iter().filter(|(n, _)| n == "DC").count(), 1);
        let h = enc.headers(&e);
        assert_eq!(
            h,
            vec![("env", b"prod".to_vec()), ("host", b"h-web-1".to_vec())]
        );
    }

    #[test]
    fn topic_templates() {
        let c = config::parse("[kafka]\nbrokers = \"b:1\"\ntopic = \"j-{_SYSTEMD_UNIT}\"\ntopic_fallback = \"j-other\"\n").unwrap();
        let enc = Encoder::new(&c.encoding, &c.kafka);
        let mut t = String::new();
        enc.topic(&entry(&[(b"_SYSTEMD_UNIT", b"getty@tty1.service")]), &mut t);
        assert_eq!(t, "j-getty_tty1.service");
        enc.topic(&entry(&[(b"MESSAGE", b"m")]), &mut t);
        assert_eq!(t, "j-other");
        enc.topic(&entry(&[(b"_SYSTEMD_UNIT", b"")]), &mut t);
        assert_eq!(t, "j-other");
    }
}
