//! The token service of a registry that authenticates as hosted registries do: the registry
//! (distribution's `auth: token`) answers 401 with a Bearer challenge naming this realm, and
//! a client trades Basic credentials here (`GET /token?service=..&scope=..`, or the OAuth2
//! password form by POST) for a JWT granting the scopes it asked for. Tokens are signed ES256
//! with a key whose self-signed certificate is the registry's rootcertbundle; distribution
//! 2.8 takes the certificate from the JWT's `x5c` header. A thread on 127.0.0.1 answers one
//! request per connection until the server is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::http::request;

/// The registry's name for itself: the `service` of its challenges and the tokens' audience.
pub(super) const SERVICE: &str = "blockctl-test-registry";
/// Who signs the tokens, as the registry's `issuer` setting expects.
pub(super) const ISSUER: &str = "blockctl-test-token-service";
/// Seconds a token is valid.
const LIFETIME: u64 = 300;

/// The running token service; stopped (its thread joined) when dropped.
pub(super) struct TokenServer {
    /// `http://127.0.0.1:PORT/token`, the realm of the registry's challenges.
    pub(super) realm: String,
    /// The certificate of the signing key, PEM: the registry's rootcertbundle.
    pub(super) certificate: String,
    issuer: Arc<Issuer>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Checks credentials and signs tokens.
struct Issuer {
    user: String,
    password: String,
    key: EncodingKey,
    /// The signing certificate, base64 DER, for the `x5c` header.
    chain: Vec<String>,
    /// Every scope a token was issued for, in order.
    granted: Mutex<Vec<String>>,
}

/// One request, as far as the token service reads it.
struct Request {
    method: String,
    target: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

impl TokenServer {
    /// Makes a signing key and its certificate and serves tokens to `user`:`password`.
    pub(super) fn start(user: &str, password: &str) -> Result<TokenServer, String> {
        let key = rcgen::KeyPair::generate().map_err(|e| format!("token key: {e}"))?;
        let cert = rcgen::CertificateParams::new(vec![ISSUER.to_string()])
            .and_then(|params| params.self_signed(&key))
            .map_err(|e| format!("token certificate: {e}"))?;
        let issuer = Arc::new(Issuer {
            user: user.into(),
            password: password.into(),
            key: EncodingKey::from_ec_der(&key.serialize_der()),
            chain: vec![base64::engine::general_purpose::STANDARD.encode(cert.der())],
            granted: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("token server: bind 127.0.0.1:0: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("token server: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (issuer, stop) = (issuer.clone(), stop.clone());
            move || serve(&listener, &issuer, &stop)
        });
        Ok(TokenServer {
            realm: format!("http://{addr}/token"),
            certificate: cert.pem(),
            issuer,
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// A token for `scope` (`repository:NAME:ACTIONS`, or empty for none), asked for over
    /// HTTP with Basic credentials, as a user would with curl.
    pub(super) fn fetch(&self, scope: &str) -> Result<String, String> {
        let url =
            url::Url::parse_with_params(&self.realm, [("service", SERVICE), ("scope", scope)])
                .map_err(|e| format!("token url: {e}"))?;
        let basic = super::distribution::basic_header(&self.issuer.user, &self.issuer.password);
        let response = request("GET", url.as_str(), &[("Authorization", &basic)], b"")?;
        let body: Value = serde_json::from_slice(&response.body).unwrap_or_default();
        match body["token"].as_str() {
            Some(token) if response.status == 200 => Ok(token.to_string()),
            _ => Err(format!(
                "token server answered {}: {}",
                response.status,
                response.text()
            )),
        }
    }

    /// Every scope a token was issued for so far.
    pub(super) fn granted(&self) -> Vec<String> {
        let granted = self.issuer.granted.lock();
        granted.unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept; the thread sees `stop` and ends.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, issuer: &Issuer, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let (status, body) = match read_request(&stream) {
            Ok(req) => issuer.answer(&req),
            Err(e) => (400, error_body(&format!("unreadable request: {e}"))),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            if status == 200 { "OK" } else { "Error" },
            body.len()
        );
    }
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let mut req = Request {
        method: method.into(),
        target: target.into(),
        authorization: None,
        body: Vec::new(),
    };
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "authorization" => req.authorization = Some(value.trim().to_string()),
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    req.body.resize(length, 0);
    reader.read_exact(&mut req.body)?;
    Ok(req)
}

impl Issuer {
    /// The status and JSON body answering `req`.
    fn answer(&self, req: &Request) -> (u16, String) {
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        if path != "/token" || !matches!(req.method.as_str(), "GET" | "POST") {
            return (404, error_body("no such endpoint"));
        }
        // GET carries Basic credentials and a query; the OAuth2 POST a form with both.
        let form = if req.method == "POST" {
            &req.body[..]
        } else {
            query.as_bytes()
        };
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(form).into_owned().collect();
        let param = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let credentials = match req.method.as_str() {
            "POST" => param("username").zip(param("password")),
            _ => req.authorization.as_deref().and_then(basic_credentials),
        };
        if credentials != Some((self.user.clone(), self.password.clone())) {
            return (401, error_body("wrong username or password"));
        }
        if param("service").as_deref() != Some(SERVICE) {
            return (400, error_body("unknown service"));
        }
        let scopes: Vec<String> = params
            .iter()
            .filter(|(name, value)| name == "scope" && !value.is_empty())
            .flat_map(|(_, value)| value.split(' ').map(str::to_string))
            .collect();
        match self.sign(&scopes) {
            Ok(token) => {
                let granted = self.granted.lock();
                granted
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(scopes);
                let body = json!({"token": token, "access_token": token, "expires_in": LIFETIME});
                (200, body.to_string())
            }
            Err(e) => (500, error_body(&e)),
        }
    }

    /// A JWT granting every action of `scopes` (`type:name:action,action`).
    fn sign(&self, scopes: &[String]) -> Result<String, String> {
        let access: Vec<Value> = scopes
            .iter()
            .filter_map(|scope| {
                let (kind, rest) = scope.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                let actions: Vec<&str> = actions.split(',').collect();
                Some(json!({"type": kind, "name": name, "actions": actions}))
            })
            .collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let claims = json!({
            "iss": ISSUER, "sub": self.user, "aud": SERVICE, "access": access,
            "iat": now, "nbf": now - 10, "exp": now + LIFETIME,
        });
        let header = Header {
            x5c: Some(self.chain.clone()),
            ..Header::new(Algorithm::ES256)
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| format!("signing: {e}"))
    }
}

/// `(user, password)` of a `Basic` Authorization header.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn error_body(message: &str) -> String {
    json!({"errors": [{"code": "UNAUTHORIZED", "message": message}]}).to_string()
}
