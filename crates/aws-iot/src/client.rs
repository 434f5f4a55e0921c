//! [`AwsIot`]: the `CloudRegistrar` on AWS IoT Core.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_iot::config::retry::RetryConfig;
use aws_sdk_iot::config::timeout::TimeoutConfig;
use aws_sdk_iot::config::{BehaviorVersion, Credentials, Region, SharedInterceptor};
use aws_sdk_iot::types::{AttributePayload, CertificateStatus};
use aws_sdk_iot::Client;
use onboard_domain::{
    CloudCertificate, CloudDevice, CloudIssued, CloudRecord, CloudRegistrar, CloudRegistration,
    DeviceId, PortError, SecretString,
};

use crate::error::AwsError;
use crate::policy::policy_document;

/// Amazon Root CA 1: what devices trust to reach the `iot:Data-ATS` endpoint, and
/// the chain handed to devices in `aws-issued` mode.
pub const AMAZON_ROOT_CA_PEM: &str = include_str!("AmazonRootCA1.pem");

/// The Thing attribute that names the Onboard device a Thing belongs to: how a
/// crashed registration's resources are found again, and how ours are told apart.
pub const DEVICE_ID_ATTRIBUTE: &str = "onboard_device_id";

/// How to reach AWS IoT and what to create there.
#[derive(Debug, Clone)]
pub struct AwsIotConfig {
    pub region: String,
    /// Another endpoint than AWS's (an emulator such as moto); `None` for AWS.
    pub endpoint_url: Option<String>,
    /// `aws-issued`: AWS issues device certificates; otherwise ours are registered.
    pub issue_certificates: bool,
    pub policy_name: String,
    /// `{device_id}`, `{serial}`, `{model}`; characters a Thing name cannot hold
    /// become `_`.
    pub thing_name_template: String,
    /// Every Thing is of this type; it marks Things as Onboard's.
    pub thing_type: String,
    /// Thing group name templates (`{model}`, `{batch}`); one that needs a value
    /// the device lacks is skipped.
    pub thing_groups: Vec<String>,
    /// The most one call may take, its retries included.
    pub operation_timeout: Duration,
    /// Attempts per call (the SDK's standard retry mode: throttling, transient
    /// errors and timeouts are retried with backoff).
    pub max_attempts: u32,
    /// Access key id and secret instead of the standard credential chain (tests).
    pub static_credentials: Option<(String, SecretString)>,
    /// Extra SDK interceptors (tests inject failures with these).
    pub interceptors: Vec<SharedInterceptor>,
}

impl AwsIotConfig {
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            endpoint_url: None,
            issue_certificates: false,
            policy_name: "onboard-device".into(),
            thing_name_template: "{device_id}".into(),
            thing_type: "onboard-device".into(),
            thing_groups: Vec::new(),
            operation_timeout: Duration::from_secs(10),
            max_attempts: 3,
            static_credentials: None,
            interceptors: Vec::new(),
        }
    }
}

/// AWS IoT Core as the cloud registry.
#[derive(Debug)]
pub struct AwsIot {
    config: AwsIotConfig,
    client: Client,
    runtime: tokio::runtime::Runtime,
    /// The data endpoint, asked once.
    endpoint: Mutex<Option<String>>,
    /// The thing type and the policy exist (checked once per process).
    setup_done: Mutex<bool>,
}

/// A step done, and how to undo it.
#[derive(Debug, Clone)]
enum Done {
    Thing(String),
    Certificate(String),
    Principal { thing: String, arn: String },
    Policy(String),
    Active(String),
}

fn sanitize(s: &str, allowed: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || allowed.contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn attribute(s: &str) -> String {
    sanitize(s, "_.,@/:#-").chars().take(800).collect()
}

fn cert_id_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

impl AwsIot {
    /// Builds the client (no call is made yet).
    pub fn connect(config: AwsIotConfig) -> Result<Self, AwsError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("onboard-aws")
            .enable_all()
            .build()
            .map_err(|e| AwsError::new("setup", format!("cannot start the AWS runtime: {e}")))?;
        let timeout = TimeoutConfig::builder()
            .operation_timeout(config.operation_timeout)
            .operation_attempt_timeout(config.operation_timeout / config.max_attempts.max(1))
            .connect_timeout(Duration::from_secs(3).min(config.operation_timeout))
            .build();
        let retry = RetryConfig::standard().with_max_attempts(config.max_attempts.max(1));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .timeout_config(timeout)
            .retry_config(retry);
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some((id, secret)) = &config.static_credentials {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret.expose(),
                None,
                None,
                "onboard-static",
            ));
        }
        let sdk = block(&runtime, loader.load());
        let mut builder = aws_sdk_iot::config::Builder::from(&sdk);
        for i in &config.interceptors {
            builder.push_interceptor(i.clone());
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
            config,
            runtime,
            endpoint: Mutex::new(None),
            setup_done: Mutex::new(false),
        })
    }

    pub fn config(&self) -> &AwsIotConfig {
        &self.config
    }

    /// The SDK client, for tests that check what AWS holds.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `f` to completion on this registrar's runtime.
    pub fn block_on<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        block(&self.runtime, f)
    }

    /// The Thing name for a device.
    pub fn thing_name(&self, device: &CloudDevice) -> String {
        let name = self
            .config
            .thing_name_template
            .replace("{device_id}", &device.device_id.to_string())
            .replace("{serial}", device.serial.as_str())
            .replace("{model}", device.model.as_deref().unwrap_or(""));
        sanitize(&name, ":_-").chars().take(128).collect()
    }

    fn groups(&self, device: &CloudDevice) -> Vec<String> {
        self.config
            .thing_groups
            .iter()
            .filter_map(|t| {
                let needs_model = t.contains("{model}");
                let needs_batch = t.contains("{batch}");
                if (needs_model && device.model.is_none())
                    || (needs_batch && device.batch.is_none())
                {
                    return None;
                }
                let name = t
                    .replace("{model}", device.model.as_deref().unwrap_or(""))
                    .replace("{batch}", device.batch.as_deref().unwrap_or(""));
                Some(sanitize(&name, ":_-").chars().take(128).collect())
            })
            .collect()
    }

    /// The thing type and the policy, created when missing; once per process.
    async fn ensure_setup(&self) -> Result<(), AwsError> {
        if *self
            .setup_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            return Ok(());
        }
        let c = &self.client;
        match c
            .create_thing_type()
            .thing_type_name(&self.config.thing_type)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("CreateThingType", e))
        {
            Ok(_) => {}
            Err(e) if e.already_exists() => {}
            Err(e) => return Err(e),
        }
        match c
            .get_policy()
            .policy_name(&self.config.policy_name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetPolicy", e))
        {
            Ok(_) => {}
            Err(e) if e.not_found() => {
                match c
                    .create_policy()
                    .policy_name(&self.config.policy_name)
                    .policy_document(policy_document())
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("CreatePolicy", e))
                {
                    Ok(_) => {}
                    Err(e) if e.already_exists() => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        *self
            .setup_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        Ok(())
    }

    /// The `iot:Data-ATS` endpoint devices connect to; asked once.
    async fn endpoint(&self) -> Result<String, AwsError> {
        if let Some(e) = self
            .endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(e);
        }
        let out = self
            .client
            .describe_endpoint()
            .endpoint_type("iot:Data-ATS")
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeEndpoint", e))?;
        let address = out
            .endpoint_address()
            .ok_or_else(|| AwsError::new("DescribeEndpoint", "no endpoint address"))?
            .to_owned();
        *self.endpoint.lock().unwrap_or_else(PoisonError::into_inner) = Some(address.clone());
        Ok(address)
    }

    async fn ensure_group(&self, group: &str) -> Result<(), AwsError> {
        match self
            .client
            .create_thing_group()
            .thing_group_name(group)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("CreateThingGroup", e))
        {
            Ok(_) => Ok(()),
            Err(e) if e.already_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates the certificate INACTIVE; returns (id, arn, pem, key).
    async fn create_certificate(
        &self,
        certificate: &CloudCertificate,
    ) -> Result<(String, String, String, Option<SecretString>), AwsError> {
        let c = &self.client;
        let missing = |call: &'static str| move || AwsError::new(call, "incomplete answer");
        match certificate {
            CloudCertificate::Own { pem } => {
                let out = c
                    .register_certificate_without_ca()
                    .certificate_pem(pem)
                    .status(CertificateStatus::Inactive)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("RegisterCertificateWithoutCA", e))?;
                let id = out
                    .certificate_id()
                    .ok_or_else(missing("RegisterCertificateWithoutCA"))?;
                let arn = out
                    .certificate_arn()
                    .ok_or_else(missing("RegisterCertificateWithoutCA"))?;
                Ok((id.to_owned(), arn.to_owned(), pem.clone(), None))
            }
            CloudCertificate::Issue { csr: Some(csr) } => {
                let csr = String::from_utf8_lossy(csr).into_owned();
                let out = c
                    .create_certificate_from_csr()
                    .certificate_signing_request(csr)
                    .set_as_active(false)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("CreateCertificateFromCsr", e))?;
                let m = missing("CreateCertificateFromCsr");
                Ok((
                    out.certificate_id().ok_or_else(m)?.to_owned(),
                    out.certificate_arn().ok_or_else(m)?.to_owned(),
                    out.certificate_pem().ok_or_else(m)?.to_owned(),
                    None,
                ))
            }
            CloudCertificate::Issue { csr: None } => {
                let out = c
                    .create_keys_and_certificate()
                    .set_as_active(false)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("CreateKeysAndCertificate", e))?;
                let m = missing("CreateKeysAndCertificate");
                let key = out.key_pair().and_then(|k| k.private_key()).ok_or_else(m)?;
                Ok((
                    out.certificate_id().ok_or_else(m)?.to_owned(),
                    out.certificate_arn().ok_or_else(m)?.to_owned(),
                    out.certificate_pem().ok_or_else(m)?.to_owned(),
                    Some(SecretString::new(key)),
                ))
            }
        }
    }

    async fn set_status(&self, id: &str, status: CertificateStatus) -> Result<(), AwsError> {
        self.client
            .update_certificate()
            .certificate_id(id)
            .new_status(status)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("UpdateCertificate", e))
            .map(|_| ())
    }

    /// Attaches the certificate to the Thing and the policy, then activates it.
    async fn attach_and_activate(
        &self,
        thing: &str,
        id: &str,
        arn: &str,
        done: &mut Vec<Done>,
    ) -> Result<(), AwsError> {
        let c = &self.client;
        c.attach_thing_principal()
            .thing_name(thing)
            .principal(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("AttachThingPrincipal", e))?;
        done.push(Done::Principal {
            thing: thing.to_owned(),
            arn: arn.to_owned(),
        });
        c.attach_policy()
            .policy_name(&self.config.policy_name)
            .target(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("AttachPolicy", e))?;
        done.push(Done::Policy(arn.to_owned()));
        self.set_status(id, CertificateStatus::Active).await?;
        done.push(Done::Active(id.to_owned()));
        Ok(())
    }

    async fn register_steps(
        &self,
        device: &CloudDevice,
        done: &mut Vec<Done>,
    ) -> Result<CloudRegistration, AwsError> {
        self.ensure_setup().await?;
        let endpoint = self.endpoint().await?;
        let groups = self.groups(device);
        for g in &groups {
            self.ensure_group(g).await?;
        }
        let thing = self.thing_name(device);
        let mut attributes = AttributePayload::builder()
            .attributes(DEVICE_ID_ATTRIBUTE, device.device_id.to_string())
            .attributes("serial", attribute(device.serial.as_str()))
            .attributes("firmware", attribute(&device.firmware_version));
        if let Some(m) = &device.model {
            attributes = attributes.attributes("model", attribute(m));
        }
        let out = self
            .client
            .create_thing()
            .thing_name(&thing)
            .thing_type_name(&self.config.thing_type)
            .attribute_payload(attributes.build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("CreateThing", e))?;
        done.push(Done::Thing(thing.clone()));
        let thing_arn = out
            .thing_arn()
            .ok_or_else(|| AwsError::new("CreateThing", "no Thing ARN in the answer"))?
            .to_owned();
        let (id, arn, pem, key) = self.create_certificate(&device.certificate).await?;
        done.push(Done::Certificate(id.clone()));
        for g in &groups {
            self.client
                .add_thing_to_thing_group()
                .thing_group_name(g)
                .thing_name(&thing)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("AddThingToThingGroup", e))?;
        }
        self.attach_and_activate(&thing, &id, &arn, done).await?;
        let issued = match device.certificate {
            CloudCertificate::Own { .. } => None,
            CloudCertificate::Issue { .. } => Some(CloudIssued {
                certificate_pem: pem,
                private_key: key,
                ca_chain_pem: AMAZON_ROOT_CA_PEM.to_owned(),
            }),
        };
        Ok(CloudRegistration {
            record: CloudRecord {
                device_id: device.device_id,
                thing_name: thing,
                thing_arn,
                certificate_id: id,
                certificate_arn: arn,
                certificate_fingerprint: String::new(),
            },
            endpoint,
            issued,
        })
    }

    /// Undoes `done` in reverse order. Every step is tried; the first error is
    /// returned.
    async fn undo(&self, done: &[Done]) -> Result<(), AwsError> {
        let mut first = None;
        for step in done.iter().rev() {
            let r = match step {
                Done::Active(id) => self.set_status(id, CertificateStatus::Inactive).await,
                Done::Policy(arn) => self.detach_policy(arn).await,
                Done::Principal { thing, arn } => self.detach_principal(thing, arn).await,
                Done::Certificate(id) => self.delete_certificate(id).await,
                Done::Thing(name) => self.delete_thing(name).await,
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "an AWS IoT step could not be undone");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn detach_policy(&self, arn: &str) -> Result<(), AwsError> {
        match self
            .client
            .detach_policy()
            .policy_name(&self.config.policy_name)
            .target(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DetachPolicy", e))
        {
            Ok(_) => Ok(()),
            Err(e) if e.not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn detach_principal(&self, thing: &str, arn: &str) -> Result<(), AwsError> {
        match self
            .client
            .detach_thing_principal()
            .thing_name(thing)
            .principal(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DetachThingPrincipal", e))
        {
            Ok(_) => Ok(()),
            Err(e) if e.not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deleted (made INACTIVE first when AWS refuses to delete it as it is); a
    /// certificate that is gone is not an error.
    async fn delete_certificate(&self, id: &str) -> Result<(), AwsError> {
        let delete = || async {
            match self
                .client
                .delete_certificate()
                .certificate_id(id)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("DeleteCertificate", e))
            {
                Ok(_) => Ok(()),
                Err(e) if e.not_found() => Ok(()),
                Err(e) => Err(e),
            }
        };
        match delete().await {
            Err(e) if e.is("CertificateStateException") => {
                match self.set_status(id, CertificateStatus::Inactive).await {
                    Ok(()) => {}
                    Err(e) if e.not_found() => return Ok(()),
                    Err(e) => return Err(e),
                }
                delete().await
            }
            other => other,
        }
    }

    async fn delete_thing(&self, name: &str) -> Result<(), AwsError> {
        match self
            .client
            .delete_thing()
            .thing_name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DeleteThing", e))
        {
            Ok(_) => Ok(()),
            Err(e) if e.not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Things marked with `device`'s id.
    async fn things_of(&self, device: DeviceId) -> Result<Vec<String>, AwsError> {
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_things()
                .attribute_name(DEVICE_ID_ATTRIBUTE)
                .attribute_value(device.to_string())
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ListThings", e))?;
            names.extend(
                out.things()
                    .iter()
                    .filter_map(|t| t.thing_name().map(str::to_owned)),
            );
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(names);
            }
        }
    }

    async fn deregister_steps(&self, device: DeviceId) -> Result<(), AwsError> {
        for thing in self.things_of(device).await? {
            let principals = match self
                .client
                .list_thing_principals()
                .thing_name(&thing)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ListThingPrincipals", e))
            {
                Ok(out) => out.principals().to_vec(),
                Err(e) if e.not_found() => continue,
                Err(e) => return Err(e),
            };
            for arn in principals {
                self.detach_policy(&arn).await?;
                self.detach_principal(&thing, &arn).await?;
                if arn.contains(":cert/") {
                    self.delete_certificate(cert_id_of(&arn)).await?;
                }
            }
            self.delete_thing(&thing).await?;
        }
        Ok(())
    }

    async fn replace_steps(
        &self,
        record: &CloudRecord,
        pem: &str,
        done: &mut Vec<Done>,
    ) -> Result<CloudRecord, AwsError> {
        self.ensure_setup().await?;
        let (id, arn, _, _) = self
            .create_certificate(&CloudCertificate::Own {
                pem: pem.to_owned(),
            })
            .await?;
        done.push(Done::Certificate(id.clone()));
        self.attach_and_activate(&record.thing_name, &id, &arn, done)
            .await?;
        Ok(CloudRecord {
            certificate_id: id,
            certificate_arn: arn,
            certificate_fingerprint: String::new(),
            ..record.clone()
        })
    }

    async fn retire_certificate(&self, thing: &str, id: &str, arn: &str) -> Result<(), AwsError> {
        self.detach_policy(arn).await?;
        self.detach_principal(thing, arn).await?;
        self.delete_certificate(id).await
    }

    async fn devices_steps(&self) -> Result<Vec<DeviceId>, AwsError> {
        let mut ids = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_things()
                .thing_type_name(&self.config.thing_type)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ListThings", e))?;
            for t in out.things() {
                let id = t
                    .attributes()
                    .and_then(|a| a.get(DEVICE_ID_ATTRIBUTE))
                    .and_then(|v| v.parse::<DeviceId>().ok());
                if let Some(id) = id {
                    ids.push(id);
                }
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                ids.sort_by_key(|d| d.0);
                ids.dedup();
                return Ok(ids);
            }
        }
    }
}

/// Blocks on `f`; from inside another tokio runtime (where blocking is not
/// allowed) it blocks on a scoped thread instead.
fn block<F>(runtime: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| match s.spawn(|| runtime.block_on(f)).join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    } else {
        runtime.block_on(f)
    }
}

impl CloudRegistrar for AwsIot {
    fn issues_certificates(&self) -> bool {
        self.config.issue_certificates
    }

    fn endpoint(&self) -> Result<Option<String>, PortError> {
        self.block_on(self.endpoint()).map(Some).map_err(Into::into)
    }

    fn register(&self, device: &CloudDevice) -> Result<CloudRegistration, PortError> {
        self.block_on(async {
            let mut done = Vec::new();
            match self.register_steps(device, &mut done).await {
                Ok(r) => Ok(r),
                Err(e) => {
                    if let Err(undo) = self.undo(&done).await {
                        tracing::warn!(device = %device.device_id, error = %undo, "a failed AWS IoT registration could not be undone now; the reconciler removes what is left");
                    }
                    Err(e.into())
                }
            }
        })
    }

    fn replace_certificate(
        &self,
        record: &CloudRecord,
        pem: &str,
    ) -> Result<CloudRecord, PortError> {
        self.block_on(async {
            let mut done = Vec::new();
            match self.replace_steps(record, pem, &mut done).await {
                Ok(new) => {
                    self.retire_certificate(
                        &record.thing_name,
                        &record.certificate_id,
                        &record.certificate_arn,
                    )
                    .await?;
                    Ok(new)
                }
                Err(e) => {
                    if let Err(undo) = self.undo(&done).await {
                        tracing::warn!(device = %record.device_id, error = %undo, "a failed AWS IoT certificate replacement could not be undone now");
                    }
                    Err(e.into())
                }
            }
        })
    }

    fn revoke(&self, record: &CloudRecord) -> Result<(), PortError> {
        self.block_on(self.set_status(&record.certificate_id, CertificateStatus::Revoked))
            .or_else(|e| if e.not_found() { Ok(()) } else { Err(e) })
            .map_err(Into::into)
    }

    fn deregister(&self, device: DeviceId) -> Result<(), PortError> {
        self.block_on(self.deregister_steps(device))
            .map_err(Into::into)
    }

    fn devices(&self) -> Result<Vec<DeviceId>, PortError> {
        self.block_on(self.devices_steps()).map_err(Into::into)
    }
}
