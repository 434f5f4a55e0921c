//! Where a rotation notification goes: one topic per device under
//! `rotation.topic_prefix`, which the device may read and Onboard's service
//! account may write.

/// The topic a device's rotation notifications are published to:
/// `<prefix>/<client_id>/rotation`.
pub fn notification_topic(prefix: &str, client_id: &str) -> String {
    format!("{prefix}/{client_id}/rotation")
}

/// The filter covering every device's notification topic (`<prefix>/+/rotation`):
/// what Onboard's service account is granted to publish to.
pub fn notification_filter(prefix: &str) -> String {
    notification_topic(prefix, "+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_prefix() {
        assert_eq!(
            notification_topic("iotsupport", "3f0c2a8e-0000-7000-8000-000000000001"),
            "iotsupport/3f0c2a8e-0000-7000-8000-000000000001/rotation"
        );
        assert_eq!(notification_filter("iotsupport"), "iotsupport/+/rotation");
        assert_eq!(notification_filter("a/b"), "a/b/+/rotation");
    }
}
