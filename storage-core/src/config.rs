//! Block documents: the saved configuration of one block, checked against its type's
//! field specs, and turned into the backend's typed config with serde.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::block::Capabilities;
use crate::error::{Error, Result};
use crate::secret::MASK;
use crate::slug::{BlockId, BlockType};

/// What a field's value is, so that `--set K=V` strings can be coerced and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// Any string.
    String,
    /// `true` or `false` (`--set` also takes yes/no, 1/0, on/off).
    Bool,
    /// A whole number.
    Integer,
    /// Strings: a TOML array, or one string of comma-separated items (`--set k=a,b`).
    List,
}

/// One configuration field of a block type. Backends declare these beside their config
/// struct; `block create` validates with them and `blockctl types` prints them.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FieldSpec {
    /// The key in the block document and in `--set`.
    pub name: &'static str,
    /// What its value is.
    pub kind: FieldKind,
    /// `block create` refuses a document without it.
    pub required: bool,
    /// Holds a credential: masked when shown, may be `env:NAME`.
    pub secret: bool,
    /// The value used when the field is left out, as `blockctl types` shows it.
    pub default: Option<&'static str>,
    /// One line for `blockctl types`.
    pub help: &'static str,
}

/// What a block type is, its fields and what it can do.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TypeSpec {
    /// The type this describes.
    pub block_type: BlockType,
    /// One line saying what the backend stores to, for `blockctl types`.
    pub summary: &'static str,
    /// The type's own fields; [`TypeSpec::all_fields`] adds the trust fields.
    pub fields: &'static [FieldSpec],
    /// What every block of the type can do.
    pub capabilities: Capabilities,
}

impl FieldSpec {
    /// An optional field that holds no secret; [`FieldSpec::required`], [`FieldSpec::secret`]
    /// and [`FieldSpec::with_default`] say otherwise.
    pub const fn new(name: &'static str, kind: FieldKind, help: &'static str) -> Self {
        FieldSpec {
            name,
            kind,
            required: false,
            secret: false,
            default: None,
            help,
        }
    }

    /// Makes the field one a document must have.
    pub const fn required(self) -> Self {
        FieldSpec {
            required: true,
            ..self
        }
    }

    /// Holds a credential: masked when shown, may be `env:NAME`.
    pub const fn secret(self) -> Self {
        FieldSpec {
            secret: true,
            ..self
        }
    }

    /// Records the value the backend uses when the field is left out.
    pub const fn with_default(self, value: &'static str) -> Self {
        FieldSpec {
            default: Some(value),
            ..self
        }
    }

    /// `timeout`: how long one request may take, as the network backends take it.
    pub const fn timeout(help: &'static str) -> Self {
        FieldSpec::new("timeout", FieldKind::Integer, help)
    }
}

/// The fields of trust every type that stores versions takes beside its own, handled here
/// once: the backends' typed configs never see them, [`BlockDocument::trust`] reads them.
pub const TRUST_FIELDS: &[FieldSpec] = &[
    FieldSpec::new(
        "signing_key",
        FieldKind::String,
        "minisign secret key file that signs every put (blockctl key generate NAME)",
    ),
    FieldSpec::new(
        "signing_password",
        FieldKind::String,
        "password of an encrypted signing_key",
    )
    .secret(),
    FieldSpec::new(
        "trusted_keys",
        FieldKind::List,
        "public keys (base64, or .pub files) whose signatures get, cat, ls and export require",
    ),
];

impl TypeSpec {
    /// The field named `name`, trust fields included.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.all_fields().find(|f| f.name == name)
    }

    /// Whether the type keeps versions, so signing and trust apply to it.
    pub fn takes_trust(&self) -> bool {
        self.capabilities.package_layout || self.capabilities.native_tree
    }

    /// The type's own fields, then the trust fields when it takes them.
    pub fn all_fields(&self) -> impl Iterator<Item = &FieldSpec> {
        let trust: &[FieldSpec] = if self.takes_trust() {
            TRUST_FIELDS
        } else {
            &[]
        };
        self.fields.iter().chain(trust.iter())
    }
}

/// A block's trust settings, as its document gives them. Empty when it neither signs nor
/// requires signatures.
#[derive(Clone, Default)]
pub struct Trust {
    /// The secret key file that signs every put.
    pub signing_key: Option<std::path::PathBuf>,
    /// The password of an encrypted `signing_key` (`env:NAME` resolved when it is used).
    pub signing_password: Option<crate::secret::Secret>,
    /// The keys whose signatures reads require; `None` reads as before.
    pub trusted_keys: Option<crate::signing::TrustedKeys>,
    /// Where the newest HEAD accepted per path is remembered, instead of
    /// `$BLOCKCTL_HOME/trust` (not a block field: for embedders and tests).
    pub seen_heads: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("signing_key", &self.signing_key)
            .field(
                "signing_password",
                &self.signing_password.as_ref().map(|_| MASK),
            )
            .field("trusted_keys", &self.trusted_keys)
            .field("seen_heads", &self.seen_heads)
            .finish()
    }
}

impl Trust {
    /// Where this agent remembers the newest HEAD it accepted per block and path:
    /// `seen_heads`, else `$BLOCKCTL_HOME/trust`.
    pub fn seen(&self) -> crate::signing::SeenHeads {
        match &self.seen_heads {
            Some(dir) => crate::signing::SeenHeads::open(dir),
            None => crate::signing::SeenHeads::default_location(),
        }
    }

    /// Whether the block neither signs nor requires signatures.
    pub fn is_empty(&self) -> bool {
        self.signing_key.is_none() && self.trusted_keys.is_none()
    }

    /// The signer of puts, loaded now (an encrypted key is decrypted with scrypt, which takes
    /// a moment: call it once per put). `None` when the block does not sign.
    pub fn signer(&self) -> Result<Option<crate::signing::Signer>> {
        let Some(path) = &self.signing_key else {
            return Ok(None);
        };
        let password = match &self.signing_password {
            Some(p) => Some(p.resolve("signing_password")?),
            None => None,
        };
        crate::signing::Signer::from_key_file(path, password.as_deref()).map(Some)
    }
}

/// A backend's typed configuration, deserialized from a block document.
pub trait BlockConfig: DeserializeOwned {
    /// The type's fields and capabilities, which documents are checked against.
    const SPEC: TypeSpec;
}

/// One saved block: its id and its fields as stored (secrets as written, `env:` unresolved).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDocument {
    /// Which block this is.
    pub id: BlockId,
    /// The fields as saved in `blocks.toml`.
    pub fields: BTreeMap<String, toml::Value>,
}

impl BlockDocument {
    /// Builds a document from `K=V` settings, coercing each value to its field's kind.
    pub fn from_settings(
        id: BlockId,
        spec: &TypeSpec,
        settings: &[(String, String)],
    ) -> Result<Self> {
        let mut fields = BTreeMap::new();
        for (key, raw) in settings {
            let field = spec.field(key).ok_or_else(|| unknown_field(spec, key))?;
            let value = match field.kind {
                FieldKind::String => toml::Value::String(raw.clone()),
                FieldKind::Bool => match raw.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" | "on" => toml::Value::Boolean(true),
                    "false" | "no" | "0" | "off" => toml::Value::Boolean(false),
                    _ => {
                        return Err(Error::Usage(format!(
                            "field `{key}` of {} takes true or false, not `{raw}`",
                            spec.block_type
                        )));
                    }
                },
                FieldKind::List => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ),
                FieldKind::Integer => toml::Value::Integer(raw.parse().map_err(|_| {
                    Error::Usage(format!(
                        "field `{key}` of {} takes a whole number, not `{raw}`",
                        spec.block_type
                    ))
                })?),
            };
            if fields.insert(key.clone(), value).is_some() {
                return Err(Error::Usage(format!("field `{key}` is set twice")));
            }
        }
        let doc = BlockDocument { id, fields };
        doc.validate(spec)?;
        Ok(doc)
    }

    /// Checks that every field is known, of its kind, and that required fields are present.
    pub fn validate(&self, spec: &TypeSpec) -> Result<()> {
        for (key, value) in &self.fields {
            let field = spec.field(key).ok_or_else(|| unknown_field(spec, key))?;
            let ok = matches!(
                (field.kind, value),
                (FieldKind::String, toml::Value::String(_))
                    | (FieldKind::Bool, toml::Value::Boolean(_))
                    | (FieldKind::Integer, toml::Value::Integer(_))
                    | (FieldKind::List, toml::Value::String(_))
            ) || matches!((field.kind, value), (FieldKind::List, toml::Value::Array(items))
                if items.iter().all(toml::Value::is_str));
            if !ok {
                return Err(Error::Usage(format!(
                    "{}: field `{key}` should be a {:?}",
                    self.id, field.kind
                )));
            }
        }
        for field in spec.all_fields().filter(|f| f.required) {
            match self.fields.get(field.name) {
                Some(toml::Value::String(s)) if s.is_empty() => {
                    return Err(Error::Usage(format!(
                        "{}: required field `{}` is empty",
                        self.id, field.name
                    )));
                }
                Some(_) => {}
                None => {
                    return Err(Error::Usage(format!(
                        "{}: required field `{}` is missing (--set {}=...)",
                        self.id, field.name, field.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// The backend's typed config (the trust fields left out: [`BlockDocument::trust`]).
    pub fn typed<T: BlockConfig>(&self) -> Result<T> {
        self.validate(&T::SPEC)?;
        let table: toml::Table = self
            .fields
            .clone()
            .into_iter()
            .filter(|(k, _)| !TRUST_FIELDS.iter().any(|f| f.name == k))
            .collect();
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Usage(format!("{}: {}", self.id, e.message())))
    }

    /// The block's trust settings: `trusted_keys` parsed now (a key that does not parse is
    /// an error at open, not at the first read), the signing key loaded when a put signs.
    pub fn trust(&self, spec: &TypeSpec) -> Result<Trust> {
        self.validate(spec)?;
        let text = |k: &str| self.fields.get(k).and_then(toml::Value::as_str);
        let signing_key = text("signing_key").map(|p| match p.strip_prefix("~/") {
            Some(rest) => {
                std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(rest)
            }
            None => std::path::PathBuf::from(p),
        });
        let signing_password = text("signing_password").map(crate::secret::Secret::new);
        let trusted_keys = match self.fields.get("trusted_keys") {
            None => None,
            Some(v) => {
                let list: Vec<String> = match v {
                    toml::Value::Array(items) => items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect(),
                    toml::Value::String(s) => s
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    _ => Vec::new(),
                };
                if list.is_empty() {
                    return Err(Error::Usage(format!(
                        "{}: trusted_keys is empty; name at least one key or leave it out",
                        self.id
                    )));
                }
                Some(crate::signing::TrustedKeys::parse(&list).map_err(|e| e.context(&self.id))?)
            }
        };
        Ok(Trust {
            signing_key,
            signing_password,
            trusted_keys,
            seen_heads: None,
        })
    }

    /// Fields for display: secret values replaced by the mask (`env:NAME` references are
    /// not secrets and stay readable).
    pub fn masked(&self, spec: &TypeSpec) -> BTreeMap<String, toml::Value> {
        self.fields
            .iter()
            .map(|(k, v)| {
                let secret = spec.field(k).is_some_and(|f| f.secret);
                let shown = match v {
                    toml::Value::String(s) if secret && !s.starts_with("env:") => {
                        toml::Value::String(MASK.into())
                    }
                    // A URL field may carry credentials (`https://user:token@host`).
                    toml::Value::String(s) => toml::Value::String(crate::secret::redact(s)),
                    other => other.clone(),
                };
                (k.clone(), shown)
            })
            .collect()
    }

    /// Every secret value this document holds, resolved, for scrubbing error texts.
    pub fn secret_values(&self, spec: &TypeSpec) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| spec.field(k).is_some_and(|f| f.secret))
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s)))
            .filter_map(|(k, s)| crate::secret::Secret::new(s).resolve(k).ok())
            .collect()
    }
}

fn unknown_field(spec: &TypeSpec, key: &str) -> Error {
    let known: Vec<&str> = spec.all_fields().map(|f| f.name).collect();
    Error::Usage(format!(
        "unknown field `{key}` for block type {} (fields: {})",
        spec.block_type,
        known.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Demo {
        basepath: String,
        token: Option<Secret>,
        verbose: Option<bool>,
        depth: Option<i64>,
    }

    const FIELDS: &[FieldSpec] = &[
        FieldSpec {
            name: "basepath",
            kind: FieldKind::String,
            required: true,
            secret: false,
            default: None,
            help: "",
        },
        FieldSpec {
            name: "token",
            kind: FieldKind::String,
            required: false,
            secret: true,
            default: None,
            help: "",
        },
        FieldSpec {
            name: "verbose",
            kind: FieldKind::Bool,
            required: false,
            secret: false,
            default: None,
            help: "",
        },
        FieldSpec {
            name: "depth",
            kind: FieldKind::Integer,
            required: false,
            secret: false,
            default: None,
            help: "",
        },
    ];

    impl BlockConfig for Demo {
        const SPEC: TypeSpec = TypeSpec {
            block_type: BlockType::Local,
            summary: "demo",
            fields: FIELDS,
            capabilities: Capabilities::OBJECT_STORE,
        };
    }

    fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_are_coerced_and_typed() {
        let id = BlockId::parse("local/demo").unwrap();
        let doc = BlockDocument::from_settings(
            id,
            &Demo::SPEC,
            &settings(&[("basepath", "/tmp/x"), ("verbose", "yes"), ("depth", "3")]),
        )
        .unwrap();
        let typed: Demo = doc.typed().unwrap();
        assert_eq!(typed.basepath, "/tmp/x");
        assert_eq!(typed.verbose, Some(true));
        assert_eq!(typed.depth, Some(3));
    }

    #[test]
    fn unknown_missing_and_mistyped_fields_are_usage_errors() {
        let id = BlockId::parse("local/demo").unwrap();
        for bad in [
            settings(&[("basepath", "/x"), ("nope", "1")]),
            settings(&[("verbose", "true")]),
            settings(&[("basepath", "/x"), ("depth", "deep")]),
            settings(&[("basepath", "/x"), ("verbose", "maybe")]),
        ] {
            let err = BlockDocument::from_settings(id.clone(), &Demo::SPEC, &bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
        }
    }

    #[test]
    fn secrets_are_masked_but_env_references_are_shown() {
        let id = BlockId::parse("local/demo").unwrap();
        let doc = BlockDocument::from_settings(
            id.clone(),
            &Demo::SPEC,
            &settings(&[("basepath", "/x"), ("token", "tok-abcdef")]),
        )
        .unwrap();
        let shown = doc.masked(&Demo::SPEC);
        assert_eq!(shown["token"].as_str(), Some(MASK));
        assert_eq!(shown["basepath"].as_str(), Some("/x"));
        let doc = BlockDocument::from_settings(
            id,
            &Demo::SPEC,
            &settings(&[("basepath", "/x"), ("token", "env:DEMO_TOKEN")]),
        )
        .unwrap();
        assert_eq!(
            doc.masked(&Demo::SPEC)["token"].as_str(),
            Some("env:DEMO_TOKEN")
        );
    }

    #[test]
    fn trust_fields_are_common_and_kept_from_the_typed_config() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::signing::generate_key_pair(dir.path(), "ci", None).unwrap();
        let id = BlockId::parse("local/demo").unwrap();
        let pubfile = key.public_key_file.display().to_string();
        let doc = BlockDocument::from_settings(
            id.clone(),
            &Demo::SPEC,
            &settings(&[
                ("basepath", "/x"),
                ("signing_key", &key.secret_key.display().to_string()),
                ("signing_password", "env:NOT_NEEDED"),
                ("trusted_keys", &format!("{}, {pubfile}", key.public_key)),
            ]),
        )
        .unwrap();
        // deny_unknown_fields on the backend's config: the trust fields never reach it.
        let typed: Demo = doc.typed().unwrap();
        assert_eq!(typed.basepath, "/x");
        assert_eq!(
            doc.masked(&Demo::SPEC)["signing_password"].as_str(),
            Some("env:NOT_NEEDED")
        );
        let trust = doc.trust(&Demo::SPEC).unwrap();
        assert!(!trust.is_empty());
        assert_eq!(trust.trusted_keys.as_ref().unwrap().ids(), vec![key.key_id]);
        assert!(!format!("{trust:?}").contains("NOT_NEEDED"));
        let signer = Trust {
            signing_password: None,
            ..trust
        }
        .signer()
        .unwrap()
        .unwrap();
        assert_eq!(signer.key_id(), key.key_id);
        // A key that does not parse fails at open; an empty list is refused.
        for bad in ["RWQ", ","] {
            let doc = BlockDocument::from_settings(
                id.clone(),
                &Demo::SPEC,
                &settings(&[("basepath", "/x"), ("trusted_keys", bad)]),
            )
            .unwrap();
            assert!(doc.trust(&Demo::SPEC).is_err(), "{bad}");
        }
        let plain = BlockDocument::from_settings(id, &Demo::SPEC, &settings(&[("basepath", "/x")]))
            .unwrap();
        assert!(plain.trust(&Demo::SPEC).unwrap().is_empty());
    }
}
