//! The IoT policy every device certificate gets: a device connects as its Thing
//! and uses only the topics under `devices/<thing name>/`.

/// The policy document (JSON) created when the policy is missing. The topics are
/// scoped with `${iot:Connection.Thing.ThingName}`, so one policy serves every
/// device and none reaches another's topics.
pub fn policy_document() -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}",
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
            },
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive", "iot:RetainPublish"],
                "Resource": "arn:aws:iot:*:*:topic/devices/${iot:Connection.Thing.ThingName}/*"
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": "arn:aws:iot:*:*:topicfilter/devices/${iot:Connection.Thing.ThingName}/*"
            }
        ]
    })
    .to_string()
}

/// AWS IoT policy names: 1 to 128 of `A-Z a-z 0-9 _ + = , . @ -`.
pub fn check_policy_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    {
        return Err("may contain only A-Z a-z 0-9 _ + = , . @ -".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_scopes_every_resource_to_the_thing() {
        let doc: serde_json::Value = serde_json::from_str(&policy_document()).unwrap();
        let statements = doc["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 3);
        for s in statements {
            let r = s["Resource"].as_str().unwrap();
            assert!(r.contains("${iot:Connection.Thing.ThingName}"), "{r}");
        }
    }

    #[test]
    fn policy_names_follow_aws_rules() {
        assert!(check_policy_name("onboard-device").is_ok());
        assert!(check_policy_name("").is_err());
        assert!(check_policy_name("a b").is_err());
        assert!(check_policy_name(&"x".repeat(129)).is_err());
    }
}
