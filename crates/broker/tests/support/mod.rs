//! Fixtures for the broker tests: a CA, devices with certificates and grants, a
//! registry-like loader, and a small synchronous MQTT test client.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use onboard_broker::testing::{Auth, TestBroker, TestBrokerSpec};
use onboard_broker::{GrantLoader, MqttEndpoint};
use onboard_domain::{BrokerGrant, Clock, DeviceId, KeyAlgorithm, Serial, SystemClock};
use onboard_pki::{CaSpec, CertificateAuthority, GeneratedCredential, IssueParams};

pub fn now() -> DateTime<Utc> {
    SystemClock.now()
}

pub fn ca() -> CertificateAuthority {
    CertificateAuthority::generate(&CaSpec::new("Broker Test Root CA"), now()).unwrap()
}

pub fn broker(ca: &CertificateAuthority, auth: Auth, password_listener: bool) -> TestBroker {
    TestBroker::start(&TestBrokerSpec {
        ca,
        now: now(),
        auth,
        password_listener,
        env: &[],
    })
    .unwrap()
}

/// A device: its grant (`devices/<id>/#` both ways) and its certificate.
pub struct Device {
    pub grant: BrokerGrant,
    pub cred: GeneratedCredential,
}

impl Device {
    pub fn new(ca: &CertificateAuthority, n: u32) -> Self {
        let id: DeviceId = format!("3f0c2a8e-0000-7000-8000-{n:012}").parse().unwrap();
        let cred = ca
            .issue_with_new_key(
                KeyAlgorithm::EcdsaP256,
                &IssueParams {
                    device_id: id,
                    validity_days: 2,
                    public_base_url: "https://onboard.test",
                    now: now(),
                },
            )
            .unwrap();
        Self {
            grant: grant(id, n),
            cred,
        }
    }

    pub fn id(&self) -> DeviceId {
        self.grant.device_id
    }

    pub fn client_id(&self) -> &str {
        &self.grant.client_id
    }

    pub fn topic(&self, rest: &str) -> String {
        format!("devices/{}/{rest}", self.client_id())
    }

    pub fn endpoint(&self, broker: &TestBroker) -> MqttEndpoint {
        broker.device_endpoint(
            self.client_id(),
            &self.cred.certificate.pem,
            self.cred.private_key.expose_secret(),
        )
    }
}

pub fn grant(id: DeviceId, n: u32) -> BrokerGrant {
    BrokerGrant {
        device_id: id,
        serial: Serial::parse(&format!("SN-{n}")).unwrap(),
        client_id: id.to_string(),
        publish: vec![format!("devices/{id}/#")],
        subscribe: vec![format!("devices/{id}/#")],
        max_qos: 1,
        retain_allowed: false,
        password_hash: None,
    }
}

/// The registry stand-in: the loader returns what it holds.
#[derive(Clone, Default)]
pub struct Registry(pub Arc<Mutex<Vec<BrokerGrant>>>);

impl Registry {
    pub fn add(&self, g: &BrokerGrant) {
        self.0.lock().unwrap().push(g.clone());
    }
    pub fn remove(&self, id: DeviceId) {
        self.0.lock().unwrap().retain(|g| g.device_id != id);
    }
    pub fn loader(&self) -> GrantLoader {
        let inner = self.0.clone();
        Arc::new(move || Ok(inner.lock().unwrap().clone()))
    }

    /// A loader whose first call says so on the returned receiver, then waits
    /// until the test sends on the returned sender: the test holds the first
    /// rewrite. Later calls load at once.
    pub fn gated_loader(&self) -> (GrantLoader, Receiver<()>, Sender<()>) {
        let inner = self.0.clone();
        let (entered_tx, entered) = channel();
        let (release, release_rx) = channel::<()>();
        let gate = Mutex::new(Some((entered_tx, release_rx)));
        let loader: GrantLoader = Arc::new(move || {
            let first = gate.lock().unwrap().take();
            if let Some((entered, release)) = first {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            Ok(inner.lock().unwrap().clone())
        });
        (loader, entered, release)
    }
}

pub use onboard_broker::testing::{Mqtt, WAIT};
