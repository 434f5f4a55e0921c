//! `MosquittoDynsec`: broker access through Mosquitto's dynamic-security plugin,
//! live, over MQTT.
//!
//! Per device: a role `onboard-device-<client id>` holding the device's ACLs
//! (`publishClientSend` for its publish topics, `subscribePattern` and
//! `publishClientReceive` for its subscribe topics) and a client whose username is
//! the client id (the certificate's CN), with that role and the device id as its
//! `textname`. Each call opens one admin connection, sends the commands in
//! batches, waits for every answer (matched by `correlationData`) within the
//! configured timeout, and disconnects: it returns once the plugin has applied
//! the change.
//!
//! Grants first read what exists and change only what differs: the plugin
//! disconnects a client when its roles change, but applies a role's new ACLs to
//! open connections without disconnecting, so re-granting an unchanged device (at
//! start-up, say) disturbs nobody. `revoke` deletes the client, which disconnects
//! the device at once, and its role.
//!
//! Each admin connection's client id is the configured one with a random suffix
//! (`onboard-service-1a2b3c4d`): the status listener keeps the configured id on
//! its long-lived connection, and Mosquitto disconnects a client when another
//! connects with the same id, so a shared id would cut the listener off at every
//! command (and a reconnecting listener would cut the command off). Sessions of
//! other processes (`onboardctl acl sync`, other replicas) never collide either.
//!
//! Passwords: the plugin hashes passwords itself and accepts only the clear
//! password, which Onboard never stores. So grants create clients without a
//! password (certificate devices need none), and password devices get theirs with
//! [`MosquittoDynsec::set_password`] at the moment Onboard generates it.
//! `BrokerGrant::password_hash` is ignored here.
//!
//! The CRL is a listener setting, not the plugin's: `publish_crl` writes the CRL
//! file and reloads Mosquitto exactly as [`crate::MosquittoFile`] does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use onboard_domain::{BrokerAccess, BrokerGrant, DeviceId, PortError, SecretString};
use rumqttc::{Client, Connection, Event, Packet, QoS, RecvTimeoutError, SubscribeReasonCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::acl::{check_grant, merge};
use crate::error::BrokerError;
use crate::file::install_crl;
use crate::mqtt::MqttEndpoint;
use crate::reload::{Reload, Reloader, DEFAULT_CONFIRM_TIMEOUT};

/// The prefix of the roles Onboard manages; `sync` deletes clients holding such a
/// role that are not in its list, and leaves every other client alone.
pub const ROLE_PREFIX: &str = "onboard-device-";

const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// Commands per MQTT message.
const CHUNK: usize = 250;
/// Large enough for `listClients` of a big fleet.
const MAX_PACKET: usize = 256 << 20;

/// The admin connection and the CRL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynsecConfig {
    /// A client with the plugin's `admin` role (as created by
    /// `mosquitto_ctrl dynsec init`), by certificate or password.
    pub endpoint: MqttEndpoint,
    /// The longest wait for the connection, and for the answers to each batch of
    /// commands (a batch holds up to 250).
    pub timeout: Duration,
    /// The listener's `crlfile`; `None`: `publish_crl` does nothing.
    pub crl_file: Option<PathBuf>,
    /// How Mosquitto is reloaded after a new CRL.
    pub reload: Reload,
    pub confirm_timeout: Option<Duration>,
}

impl DynsecConfig {
    /// A 10 s timeout, no CRL file.
    pub fn new(endpoint: MqttEndpoint) -> Self {
        Self {
            endpoint,
            timeout: Duration::from_secs(10),
            crl_file: None,
            reload: Reload::None,
            confirm_timeout: Some(DEFAULT_CONFIRM_TIMEOUT),
        }
    }
}

/// [`BrokerAccess`] through the dynamic-security plugin.
#[derive(Debug)]
pub struct MosquittoDynsec {
    config: DynsecConfig,
    reloader: Reloader,
    /// One admin session at a time (listeners with `use_username_as_clientid`
    /// would make two sessions of one account kick each other).
    session: Mutex<()>,
}

/// One ACL of a role, as the plugin lists it (priority aside).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Acl {
    acltype: String,
    topic: String,
    allow: bool,
}

#[derive(Debug, Deserialize)]
struct Reply {
    command: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default, rename = "correlationData")]
    correlation: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Replies {
    #[serde(default)]
    responses: Vec<Reply>,
}

#[derive(Debug, Deserialize)]
struct RoleRef {
    rolename: String,
}

#[derive(Debug, Deserialize)]
struct ClientInfo {
    username: String,
    #[serde(default)]
    textname: Option<String>,
    #[serde(default)]
    roles: Vec<RoleRef>,
}

#[derive(Debug, Deserialize)]
struct RoleInfo {
    rolename: String,
    #[serde(default)]
    acls: Vec<Acl>,
}

/// What one device should have.
struct Desired {
    client_id: String,
    device_id: DeviceId,
    role: String,
    acls: Vec<Acl>,
}

fn role_name(client_id: &str) -> String {
    format!("{ROLE_PREFIX}{client_id}")
}

fn desired(grants: &[BrokerGrant]) -> Vec<Desired> {
    merge(grants)
        .into_iter()
        .map(|(client_id, (access, grant))| {
            let mut acls = BTreeSet::new();
            for (topic, (read, write)) in access {
                let mut add = |acltype: &str| {
                    acls.insert(Acl {
                        acltype: acltype.into(),
                        topic: topic.clone(),
                        allow: true,
                    });
                };
                if write {
                    add("publishClientSend");
                }
                if read {
                    add("subscribePattern");
                    add("publishClientReceive");
                }
            }
            Desired {
                client_id: client_id.to_owned(),
                device_id: grant.device_id,
                role: role_name(client_id),
                acls: acls.into_iter().collect(),
            }
        })
        .collect()
}

fn acls_json(acls: &[Acl]) -> Value {
    Value::Array(
        acls.iter()
            .map(|a| json!({"acltype": a.acltype, "topic": a.topic, "allow": a.allow, "priority": 0}))
            .collect(),
    )
}

/// The commands that take a device from `role`/`client` (what exists: the role's
/// ACLs, the client's roles) to `want`.
fn changes(want: &Desired, role: Option<&[Acl]>, client: Option<&[String]>) -> Vec<Value> {
    let mut out = Vec::new();
    match role {
        None => out.push(json!({
            "command": "createRole", "rolename": want.role,
            "textname": format!("Onboard device {}", want.device_id),
            "acls": acls_json(&want.acls),
        })),
        Some(current) => {
            let mut current = current.to_vec();
            current.sort();
            current.dedup();
            if current != want.acls {
                out.push(json!({"command": "modifyRole", "rolename": want.role, "acls": acls_json(&want.acls)}));
            }
        }
    }
    match client {
        None => out.push(json!({
            "command": "createClient", "username": want.client_id,
            "textname": want.device_id.to_string(),
            "roles": [{"rolename": want.role, "priority": -1}],
        })),
        Some(roles) if !roles.contains(&want.role) => out.push(json!({
            "command": "addClientRole", "username": want.client_id,
            "rolename": want.role, "priority": -1,
        })),
        Some(_) => {}
    }
    out
}

/// A client Onboard made for this device: it holds one of Onboard's roles, or
/// carries the device id as its `textname`.
fn is_ours(client: &ClientInfo, device_id: &str) -> bool {
    client.textname.as_deref() == Some(device_id)
        || client
            .roles
            .iter()
            .any(|r| r.rolename.starts_with(ROLE_PREFIX))
}

fn is_not_found(reply: &Reply) -> bool {
    reply
        .error
        .as_deref()
        .is_some_and(|e| e.contains("not found"))
}

fn failed(reply: &Reply) -> BrokerError {
    BrokerError::Dynsec {
        command: reply.command.clone(),
        error: reply.error.clone().unwrap_or_default(),
    }
}

/// Fails on the first error answer.
fn all_ok(replies: &[Reply]) -> Result<(), BrokerError> {
    match replies.iter().find(|r| r.error.is_some()) {
        Some(r) => Err(failed(r)),
        None => Ok(()),
    }
}

fn data<T: serde::de::DeserializeOwned>(reply: &Reply, key: &str) -> Result<T, BrokerError> {
    let value = reply
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
        .ok_or_else(|| BrokerError::Dynsec {
            command: reply.command.clone(),
            error: format!("the answer has no {key}"),
        })?;
    serde_json::from_value(value).map_err(|e| BrokerError::Dynsec {
        command: reply.command.clone(),
        error: format!("unreadable {key}: {e}"),
    })
}

impl MosquittoDynsec {
    pub fn new(config: DynsecConfig) -> Self {
        let reloader = Reloader {
            reload: config.reload.clone(),
            confirm_timeout: config.confirm_timeout,
        };
        Self {
            config,
            reloader,
            session: Mutex::new(()),
        }
    }

    /// Sets the password of a granted device's client (the plugin stores its own
    /// salted hash). Call it after `grant`, when Onboard has just generated the
    /// password; Onboard keeps only its `mosquitto_passwd` hash.
    pub fn set_password(&self, client_id: &str, password: &SecretString) -> Result<(), PortError> {
        crate::acl::check_client_id(client_id)?;
        self.with_session(|s| {
            let replies = s.run(vec![json!({
                "command": "setClientPassword", "username": client_id,
                "password": password.expose(),
            })])?;
            all_ok(&replies)
        })
        .map_err(PortError::from)
    }

    fn with_session<T>(
        &self,
        f: impl FnOnce(&mut Session) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        let _one = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let mut session = Session::open(&self.config.endpoint, self.config.timeout)?;
        let result = f(&mut session);
        session.close();
        result
    }

    /// Reads the current role and client of each wanted device, then sends the
    /// changes.
    fn apply(&self, grants: &[BrokerGrant]) -> Result<(), BrokerError> {
        grants.iter().try_for_each(check_grant)?;
        let want = desired(grants);
        if want.is_empty() {
            return Ok(());
        }
        self.with_session(|s| {
            let mut reads = Vec::with_capacity(want.len() * 2);
            for w in &want {
                reads.push(json!({"command": "getRole", "rolename": w.role}));
                reads.push(json!({"command": "getClient", "username": w.client_id}));
            }
            let replies = s.run(reads)?;
            let mut commands = Vec::new();
            for (w, pair) in want.iter().zip(replies.chunks(2)) {
                let [role_reply, client_reply] = pair else {
                    return Err(BrokerError::Mqtt("an answer is missing".into()));
                };
                let role: Option<RoleInfo> = match role_reply {
                    r if is_not_found(r) => None,
                    r if r.error.is_some() => return Err(failed(r)),
                    r => Some(data(r, "role")?),
                };
                let client: Option<ClientInfo> = match client_reply {
                    r if is_not_found(r) => None,
                    r if r.error.is_some() => return Err(failed(r)),
                    r => Some(data(r, "client")?),
                };
                let roles: Option<Vec<String>> =
                    client.map(|c| c.roles.into_iter().map(|r| r.rolename).collect());
                commands.extend(changes(
                    w,
                    role.as_ref().map(|r| r.acls.as_slice()),
                    roles.as_deref(),
                ));
            }
            all_ok(&s.run(commands)?)
        })
    }

    fn list_clients(s: &mut Session) -> Result<Vec<ClientInfo>, BrokerError> {
        let replies = s.run(vec![
            json!({"command": "listClients", "verbose": true, "count": -1, "offset": 0}),
        ])?;
        all_ok(&replies)?;
        replies
            .first()
            .map_or(Ok(Vec::new()), |r| data(r, "clients"))
    }
}

impl BrokerAccess for MosquittoDynsec {
    fn grant(&self, grant: &BrokerGrant) -> Result<(), PortError> {
        self.apply(std::slice::from_ref(grant))
            .map_err(PortError::from)
    }

    fn grant_many(&self, grants: &[BrokerGrant]) -> Result<(), PortError> {
        self.apply(grants).map_err(PortError::from)
    }

    /// Deletes the device's client (which disconnects it) and its role. The client
    /// is found by username (the device id, as the certificate profile sets the
    /// CN) or else by its `textname`.
    fn revoke(&self, device: DeviceId) -> Result<(), PortError> {
        let id = device.to_string();
        self.with_session(|s| {
            let replies = s.run(vec![json!({"command": "getClient", "username": id})])?;
            let mut usernames = Vec::new();
            match replies.first() {
                Some(r) if r.error.is_none() => {
                    let c: ClientInfo = data(r, "client")?;
                    if is_ours(&c, &id) {
                        usernames.push((c.username, c.roles));
                    }
                }
                Some(r) if !is_not_found(r) => return Err(failed(r)),
                _ => {}
            }
            if usernames.is_empty() {
                for c in Self::list_clients(s)? {
                    if c.textname.as_deref() == Some(id.as_str()) && is_ours(&c, &id) {
                        usernames.push((c.username, c.roles));
                    }
                }
            }
            let mut roles = BTreeSet::from([role_name(&id)]);
            let mut commands = Vec::new();
            for (username, client_roles) in usernames {
                roles.extend(
                    client_roles
                        .into_iter()
                        .map(|r| r.rolename)
                        .filter(|r| r.starts_with(ROLE_PREFIX)),
                );
                commands.push(json!({"command": "deleteClient", "username": username}));
            }
            commands.extend(
                roles
                    .iter()
                    .map(|r| json!({"command": "deleteRole", "rolename": r})),
            );
            let replies = s.run(commands)?;
            match replies
                .iter()
                .find(|r| r.error.is_some() && !is_not_found(r))
            {
                Some(r) => Err(failed(r)),
                None => Ok(()),
            }
        })
        .map_err(PortError::from)
    }

    /// Deletes every client holding an `onboard-device-` role that `grants` does
    /// not list, and every such role; creates or corrects the rest.
    fn sync(&self, grants: &[BrokerGrant]) -> Result<(), PortError> {
        grants.iter().try_for_each(check_grant)?;
        let want = desired(grants);
        self.with_session(|s| {
            let clients = Self::list_clients(s)?;
            let replies = s.run(vec![
                json!({"command": "listRoles", "verbose": true, "count": -1, "offset": 0}),
            ])?;
            all_ok(&replies)?;
            let roles: Vec<RoleInfo> = replies
                .first()
                .map_or(Ok(Vec::new()), |r| data(r, "roles"))?;

            let wanted_clients: BTreeSet<&str> =
                want.iter().map(|w| w.client_id.as_str()).collect();
            let wanted_roles: BTreeSet<&str> = want.iter().map(|w| w.role.as_str()).collect();
            let mut commands = Vec::new();
            let mut client_roles: HashMap<String, Vec<String>> = HashMap::new();
            for c in clients {
                let ours = c.roles.iter().any(|r| r.rolename.starts_with(ROLE_PREFIX));
                if ours && !wanted_clients.contains(c.username.as_str()) {
                    commands.push(json!({"command": "deleteClient", "username": c.username}));
                } else {
                    client_roles.insert(
                        c.username,
                        c.roles.into_iter().map(|r| r.rolename).collect(),
                    );
                }
            }
            let mut role_acls: BTreeMap<String, Vec<Acl>> = BTreeMap::new();
            for r in roles
                .into_iter()
                .filter(|r| r.rolename.starts_with(ROLE_PREFIX))
            {
                if wanted_roles.contains(r.rolename.as_str()) {
                    role_acls.insert(r.rolename, r.acls);
                } else {
                    commands.push(json!({"command": "deleteRole", "rolename": r.rolename}));
                }
            }
            for w in &want {
                commands.extend(changes(
                    w,
                    role_acls.get(&w.role).map(Vec::as_slice),
                    client_roles.get(&w.client_id).map(Vec::as_slice),
                ));
            }
            all_ok(&s.run(commands)?)
        })
        .map_err(PortError::from)
    }

    fn publish_crl(&self, crl_pem: &str) -> Result<(), PortError> {
        match &self.config.crl_file {
            Some(path) => install_crl(path, &self.reloader, crl_pem).map_err(PortError::from),
            None => Ok(()),
        }
    }
}

/// The usernames of the plugin's clients, on a fresh admin session.
#[cfg(feature = "test-support")]
pub(crate) fn client_names(
    endpoint: &MqttEndpoint,
    timeout: Duration,
) -> Result<Vec<String>, BrokerError> {
    let mut session = Session::open(endpoint, timeout)?;
    let result = MosquittoDynsec::list_clients(&mut session);
    session.close();
    Ok(result?.into_iter().map(|c| c.username).collect())
}

/// Runs raw plugin commands on a fresh admin session; every one must succeed.
#[cfg(feature = "test-support")]
pub(crate) fn run_commands(
    endpoint: &MqttEndpoint,
    timeout: Duration,
    commands: Vec<Value>,
) -> Result<(), BrokerError> {
    let mut session = Session::open(endpoint, timeout)?;
    let result = session.run(commands).and_then(|r| all_ok(&r));
    session.close();
    result
}

/// One admin connection.
struct Session {
    client: Client,
    connection: Connection,
    deadline: Instant,
    timeout: Duration,
    nonce: String,
    next: u64,
}

impl Session {
    fn open(endpoint: &MqttEndpoint, timeout: Duration) -> Result<Self, BrokerError> {
        let nonce = hex_nonce()?;
        let options = session_endpoint(endpoint, &nonce).options(MAX_PACKET)?;
        let (client, connection) = Client::new(options, 16);
        let mut s = Self {
            client,
            connection,
            deadline: Instant::now() + timeout,
            timeout,
            nonce,
            next: 0,
        };
        s.client
            .subscribe(RESPONSE_TOPIC, QoS::AtLeastOnce)
            .map_err(|e| BrokerError::Mqtt(format!("subscribe: {e}")))?;
        loop {
            if let Packet::SubAck(ack) = s.next_packet()? {
                return match ack.return_codes.first() {
                    Some(SubscribeReasonCode::Success(_)) => Ok(s),
                    _ => Err(BrokerError::Mqtt(format!(
                        "the broker refused the subscription to {RESPONSE_TOPIC}: is this account a dynamic-security admin?"
                    ))),
                };
            }
        }
    }

    /// The next incoming packet, or an error at the deadline or on a connection
    /// failure.
    fn next_packet(&mut self) -> Result<Packet, BrokerError> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.connection.recv_timeout(left) {
                Ok(Ok(Event::Incoming(packet))) => return Ok(packet),
                Ok(Ok(Event::Outgoing(_))) => {}
                Ok(Err(e)) => {
                    return Err(BrokerError::Mqtt(format!(
                        "dynamic-security admin connection: {e}"
                    )))
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(BrokerError::Mqtt(format!(
                        "no answer from the dynamic-security plugin within {:?}",
                        self.timeout
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(BrokerError::Mqtt("the admin connection closed".into()))
                }
            }
        }
    }

    /// Sends `commands` (in batches) and returns one reply per command, in order.
    fn run(&mut self, commands: Vec<Value>) -> Result<Vec<Reply>, BrokerError> {
        let mut out = Vec::with_capacity(commands.len());
        let mut commands = commands.into_iter().peekable();
        while commands.peek().is_some() {
            let mut ids = Vec::with_capacity(CHUNK);
            let mut batch = Vec::with_capacity(CHUNK);
            for mut command in commands.by_ref().take(CHUNK) {
                let id = format!("{}-{}", self.nonce, self.next);
                self.next += 1;
                if let Value::Object(map) = &mut command {
                    map.insert("correlationData".into(), Value::String(id.clone()));
                }
                ids.push(id);
                batch.push(command);
            }
            let payload = serde_json::to_vec(&json!({ "commands": batch }))
                .map_err(|e| BrokerError::Mqtt(format!("cannot encode the commands: {e}")))?;
            // The timeout bounds each round trip, not the whole call.
            self.deadline = Instant::now() + self.timeout;
            self.client
                .publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, payload)
                .map_err(|e| BrokerError::Mqtt(format!("publish: {e}")))?;
            let mut answers: HashMap<String, Reply> = HashMap::with_capacity(ids.len());
            while answers.len() < ids.len() {
                let Packet::Publish(p) = self.next_packet()? else {
                    continue;
                };
                if p.topic != RESPONSE_TOPIC {
                    continue;
                }
                let Ok(replies) = serde_json::from_slice::<Replies>(&p.payload) else {
                    continue;
                };
                for r in replies.responses {
                    if let Some(id) = r.correlation.clone() {
                        if id.starts_with(&self.nonce) {
                            answers.insert(id, r);
                        }
                    }
                }
            }
            for id in ids {
                let reply = answers
                    .remove(&id)
                    .ok_or_else(|| BrokerError::Mqtt("an answer is missing".into()))?;
                out.push(reply);
            }
        }
        Ok(out)
    }

    /// Disconnects politely, waiting briefly for the DISCONNECT to leave.
    fn close(mut self) {
        if self.client.try_disconnect().is_err() {
            return;
        }
        let until = Instant::now() + Duration::from_millis(500);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.connection.recv_timeout(left) {
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => {
                    return
                }
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// The endpoint of one admin session: the configured client id with the first
/// eight hex digits of the session's nonce appended.
fn session_endpoint(endpoint: &MqttEndpoint, nonce: &str) -> MqttEndpoint {
    let mut e = endpoint.clone();
    e.client_id = format!("{}-{}", e.client_id, &nonce[..nonce.len().min(8)]);
    e
}

/// A random prefix for this session's correlation data (answers may be seen by
/// other admin sessions too).
fn hex_nonce() -> Result<String, BrokerError> {
    let bytes = onboard_pki::secrets::random_bytes(8)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::acl::tests::grant;

    #[test]
    fn each_admin_session_has_a_client_id_of_its_own() {
        let e = MqttEndpoint::from_url("mqtts://127.0.0.1:8884", "onboard-service").unwrap();
        let (one, two) = (hex_nonce().unwrap(), hex_nonce().unwrap());
        let (a, b) = (session_endpoint(&e, &one), session_endpoint(&e, &two));
        assert_eq!(a.client_id, format!("onboard-service-{}", &one[..8]));
        assert_ne!(a.client_id, b.client_id);
        assert_eq!(e.client_id, "onboard-service", "the listener keeps its id");
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 8884));
    }

    #[test]
    fn roles_carry_the_grant_and_unchanged_devices_need_no_command() {
        let want = desired(&[grant(1)]);
        let w = &want[0];
        assert_eq!(w.role, format!("onboard-device-{}", grant(1).client_id));
        let types: Vec<(&str, &str)> = w
            .acls
            .iter()
            .map(|a| (a.acltype.as_str(), a.topic.as_str()))
            .collect();
        let id = grant(1).client_id;
        assert!(types.contains(&("publishClientSend", &*format!("devices/{id}/#"))));
        assert!(types.contains(&("subscribePattern", &*format!("config/{id}"))));
        assert!(!types.contains(&("publishClientSend", &*format!("config/{id}"))));

        let fresh = changes(w, None, None);
        assert_eq!(fresh[0]["command"], "createRole");
        assert_eq!(fresh[1]["command"], "createClient");
        assert_eq!(fresh[1]["roles"][0]["rolename"], w.role.as_str());
        let mut shuffled = w.acls.clone();
        shuffled.reverse();
        assert!(changes(w, Some(&shuffled), Some(std::slice::from_ref(&w.role))).is_empty());
        let changed = changes(w, Some(&shuffled[1..]), Some(&[]));
        assert_eq!(changed[0]["command"], "modifyRole");
        assert_eq!(changed[1]["command"], "addClientRole");
    }

    #[test]
    fn the_crl_is_installed_before_mosquitto_runs() {
        // At start-up, before Mosquitto (which needs the CRL file) runs: no pid
        // file yet. publish_crl needs no admin connection.
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            DynsecConfig::new(MqttEndpoint::from_url("mqtt://127.0.0.1:1", "x").unwrap());
        config.crl_file = Some(dir.path().join("crl.pem"));
        config.reload = Reload::Signal {
            pid_file: dir.path().join("mosquitto.pid"),
        };
        let pem = "-----BEGIN X509 CRL-----\nMA==\n-----END X509 CRL-----\n";
        MosquittoDynsec::new(config.clone())
            .publish_crl(pem)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("crl.pem")).unwrap(),
            pem
        );
        // A pid file without a pid is an error.
        std::fs::write(dir.path().join("mosquitto.pid"), "\n").unwrap();
        assert!(matches!(
            MosquittoDynsec::new(config).publish_crl(pem),
            Err(PortError::Unavailable(m)) if m.contains("holds no process id")
        ));
    }
}
