//! Creating Azurite containers: one SharedKey-signed `PUT ?restype=container`, since
//! object_store (the client under test) has no call for it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Azurite;
use super::http::request;

const VERSION: &str = "2021-08-06";

impl Azurite {
    /// Creates `container` (201), or accepts that it already exists (409).
    pub fn create_container(&self, container: &str) -> Result<(), String> {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let resource = format!(
            "/{acct}/{acct}/{container}\nrestype:container",
            acct = self.account
        );
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{VERSION}\n{resource}"
        );
        let key = STANDARD
            .decode(self.key)
            .map_err(|e| format!("emulator key: {e}"))?;
        let signature = STANDARD.encode(hmac_sha256(&key, to_sign.as_bytes()));
        let auth = format!("SharedKey {}:{signature}", self.account);
        let url = format!("{}/{container}?restype=container", self.endpoint);
        let headers = [
            ("x-ms-date", date.as_str()),
            ("x-ms-version", VERSION),
            ("Authorization", auth.as_str()),
        ];
        let resp = request("PUT", &url, &headers, b"")?;
        match resp.status {
            201 | 409 => Ok(()),
            s => Err(format!(
                "creating container {container}: HTTP {s}: {}",
                resp.text()
            )),
        }
    }
}

/// HMAC (RFC 2104) over SHA-256.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
