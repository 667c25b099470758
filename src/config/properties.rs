//! The librdkafka property policy: which user-supplied properties would weaken delivery.
//!
//! Lives with the configuration because it is enforced where the file is read, so a
//! refused property is named with its line before anything connects. `kafka::client` sets
//! the guarantee's own values last, so even a property this list misses cannot weaken them.

/// Properties the agent sets itself and that users may not override, with the reason.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("metadata.broker.list", "set kafka.brokers instead"),
    (
        "transactional.id",
        "reserved for the exactly-once delivery mode",
    ),
    (
        "enable.gapless.guarantee",
        "the agent's own watermark already prevents gaps",
    ),
    (
        "delivery.report.only.error",
        "the watermark moves only on a report for every record; without success reports the cursor would never advance",
    ),
    (
        "delivery.timeout.ms",
        "an alias of message.timeout.ms, which the agent sets itself in exactly-once mode (two names for one setting make start-up fail at random); set message.timeout.ms instead",
    ),
];

/// Checks one user-supplied librdkafka property against the delivery guarantee.
pub(crate) fn check_user_property(name: &str, value: &str) -> Result<(), String> {
    if let Some((_, why)) = RESERVED.iter().find(|(n, _)| *n == name) {
        return Err(format!("cannot be set here: {why}"));
    }
    match name {
        "acks" | "request.required.acks" if !matches!(value, "all" | "-1") => {
            return Err(format!(
                "{value:?} would confirm entries before every in-sync replica has them; only \"all\" is allowed"
            ));
        }
        "enable.idempotence" if value != "true" => {
            return Err(
                "must stay true: without it a retried batch can be duplicated or reordered".into(),
            );
        }
        "message.timeout.ms" => {
            let ms: u64 = value
                .parse()
                .map_err(|_| format!("{value:?} is not a number of milliseconds"))?;
            if ms != 0 && ms < 300_000 {
                return Err(format!(
                    "{ms} ms would give up on entries during a short broker outage; use 0 (never) or at least 300000"
                ));
            }
        }
        "max.in.flight.requests.per.connection" | "max.in.flight" => {
            let n: u64 = value
                .parse()
                .map_err(|_| format!("{value:?} is not a number"))?;
            if !(1..=5).contains(&n) {
                return Err("must be between 1 and 5 with the idempotent producer".into());
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weakening_values_are_refused() {
        assert!(check_user_property("acks", "1").is_err());
        assert!(check_user_property("acks", "all").is_ok());
        assert!(check_user_property("request.required.acks", "-1").is_ok());
        assert!(check_user_property("enable.idempotence", "false").is_err());
        assert!(check_user_property("message.timeout.ms", "299999").is_err());
        assert!(check_user_property("message.timeout.ms", "0").is_ok());
        assert!(check_user_property("delivery.timeout.ms", "600000").is_err());
        assert!(check_user_property("delivery.report.only.error", "true").is_err());
        assert!(check_user_property("delivery.report.only.error", "false").is_err());
        assert!(check_user_property("max.in.flight.requests.per.connection", "6").is_err());
        assert!(check_user_property("transactional.id", "x").is_err());
        assert!(check_user_property("security.protocol", "ssl").is_ok());
    }
}
