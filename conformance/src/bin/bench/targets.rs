//! The targets: an emulator started per backend, blockctl blocks and rclone remotes on it, and the byte-counting proxy in front.

use super::*;

pub(crate) struct Target {
    pub(crate) name: String,
    /// `blockctl block create` arguments after the slug.
    pub(crate) block: (String, Vec<String>),
    /// rclone remote env (`RCLONE_CONFIG_...`) and the remote root (`name:bucket`), when
    /// rclone can reach this target.
    pub(crate) rclone: Option<(Vec<(String, String)>, String)>,
    /// Why rclone is not run here, if not.
    pub(crate) rclone_skip: Option<String>,
    /// The server's folder behind rclone's remote root, where rclone cannot make folders
    /// itself (rclone 1.60 on pyftpdlib's "501 No such directory"): the bench makes the
    /// source's folder tree there before each rclone copy, outside the timing.
    pub(crate) rclone_folders: Option<PathBuf>,
    /// A read-only target's served folder: versions are written there through a local block
    /// (`local/served`, untimed) and only gets are measured.
    pub(crate) served: Option<PathBuf>,
    /// Prefect's basepath (a folder, or `s3://bucket/prefix`) and S3 endpoint, where
    /// Prefect's own storage blocks reach this target.
    pub(crate) prefect: Option<(String, Option<String>)>,
    /// The same store behind a byte-counting proxy, for the delta rows (none on local).
    pub(crate) wire: Option<Wire>,
    pub(crate) _guard: Box<dyn std::any::Any>,
}

/// A target reached through a [`FaultProxy`] that counts what crosses it.
pub(crate) struct Wire {
    pub(crate) proxy: FaultProxy,
    /// `blockctl block create` arguments, pointing at the proxy.
    pub(crate) block: (String, Vec<String>),
    /// rclone's remote env and root, pointing at the proxy.
    pub(crate) rclone: Option<(Vec<(String, String)>, String)>,
}

/// The runtime the proxies run on.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Puts a counting proxy in front of the target's server: the first `127.0.0.1:PORT` in its
/// block settings (or `port=` for SMB) is replaced by the proxy's, there and in rclone's.
pub(crate) fn wire_for(t: &Target) -> Result<Option<Wire>, String> {
    let (slug, sets) = &t.block;
    let port_set = sets.iter().find_map(|s| s.strip_prefix("port="));
    let authority = match port_set {
        Some(port) => format!("127.0.0.1:{port}"),
        None => {
            let Some(found) = sets.iter().find_map(|s| {
                let at = s.find("127.0.0.1:")?;
                let rest = &s[at..];
                let end = rest[10..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(rest.len(), |e| e + 10);
                Some(rest[..end].to_string())
            }) else {
                return Ok(None);
            };
            found
        }
    };
    let proxy = runtime().block_on(FaultProxy::start(&authority))?;
    let via = proxy.url().trim_start_matches("http://").to_string();
    let (old_port, new_port) = (
        authority.rsplit(':').next().unwrap_or_default().to_string(),
        via.rsplit(':').next().unwrap_or_default().to_string(),
    );
    let swap = |v: &str| -> String {
        if port_set.is_some() && v == old_port {
            new_port.clone()
        } else if v == format!("port={old_port}") {
            format!("port={new_port}")
        } else {
            v.replace(&authority, &via)
        }
    };
    let block = (
        format!("{}-wire", slug),
        sets.iter().map(|v| swap(v)).collect(),
    );
    let rclone = t.rclone.as_ref().map(|(env, root)| {
        let env = env
            .iter()
            .map(|(k, v)| {
                let v = if k.ends_with("_PORT") {
                    swap(v)
                } else {
                    v.replace(&authority, &via)
                };
                (k.clone(), v)
            })
            .collect();
        (env, root.clone())
    });
    Ok(Some(Wire {
        proxy,
        block,
        rclone,
    }))
}

pub(crate) fn set(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
        .collect()
}

/// `rclone obscure PASSWORD`, as rclone's config wants passwords.
pub(crate) fn obscure(password: &str) -> Result<String, String> {
    let out = Command::new("rclone")
        .args(["obscure", password])
        .output()
        .map_err(|e| format!("rclone obscure: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) fn rclone_env(remote: &str, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                format!(
                    "RCLONE_CONFIG_{}_{}",
                    remote.to_uppercase(),
                    k.to_uppercase()
                ),
                v.to_string(),
            )
        })
        .collect()
}

pub(crate) fn start_target(name: &str, work: &Path) -> Result<Target, String> {
    let mut rclone_skip = peers::rclone()
        .err()
        .map(|e| format!("rclone could not be installed: {e}"));
    let t = match name {
        "local" => {
            let base = work.join("local-store");
            fs::create_dir_all(&base).map_err(|e| e.to_string())?;
            let rdir = work.join("rclone-local");
            Target {
                name: name.into(),
                block: (
                    "local/bench".into(),
                    set(&[("basepath", &base.to_string_lossy())]),
                ),
                rclone: Some((vec![], rdir.to_string_lossy().into_owned())),
                rclone_skip: None,
                rclone_folders: None,
                served: None,
                prefect: Some((
                    work.join("prefect-local").to_string_lossy().into_owned(),
                    None,
                )),
                wire: None,
                _guard: Box::new(()),
            }
        }
        "s3" => {
            let moto = Moto::start()?;
            moto.create_bucket(BUCKET)?;
            let ep = moto.endpoint.clone();
            let env = rclone_env(
                "bs3",
                &[
                    ("type", "s3"),
                    ("provider", "Other"),
                    ("endpoint", &ep),
                    ("access_key_id", "test"),
                    ("secret_access_key", "test"),
                    ("region", "us-east-1"),
                    ("force_path_style", "true"),
                    ("no_head", "true"),
                ],
            );
            Target {
                name: name.into(),
                block: (
                    "s3/bench".into(),
                    set(&[
                        ("bucket", BUCKET),
                        ("endpoint", &ep),
                        ("access_key_id", "test"),
                        ("secret_access_key", "test"),
                        ("allow_http", "true"),
                    ]),
                ),
                rclone: Some((env, format!("bs3:{BUCKET}"))),
                rclone_skip: None,
                rclone_folders: None,
                served: None,
                prefect: Some((format!("s3://{BUCKET}/prefect"), Some(ep.clone()))),
                wire: None,
                _guard: Box::new(moto),
            }
        }
        "oci" => {
            let registry = OciRegistry::start()?;
            Target {
                name: name.into(),
                block: (
                    "oci/bench".into(),
                    set(&[
                        ("registry", &registry.host),
                        ("repository", "bench"),
                        ("username", &registry.user),
                        ("password", &registry.password),
                    ]),
                ),
                rclone: None,
                rclone_skip: None,
                rclone_folders: None,
                served: None,
                prefect: None,
                wire: None,
                _guard: Box::new(registry),
            }
        }
        "azure" => {
            let az = Azurite::start()?;
            az.create_container(BUCKET)?;
            let sas = account_sas(az.account, az.key)?;
            let env = rclone_env(
                "baz",
                &[
                    ("type", "azureblob"),
                    ("sas_url", &format!("{}?{sas}", az.endpoint)),
                ],
            );
            Target {
                name: name.into(),
                block: (
                    "azure/bench".into(),
                    set(&[
                        ("container", BUCKET),
                        ("account", az.account),
                        ("access_key", az.key),
                        ("endpoint", &az.endpoint),
                    ]),
                ),
                rclone: Some((env, format!("baz:{BUCKET}"))),
                rclone_skip: None,
                rclone_folders: None,
                served: None,
                prefect: None,
                wire: None,
                _guard: Box::new(az),
            }
        }
        "gcs" => {
            let gcs = FakeGcs::start()?;
            gcs.create_bucket(BUCKET)?;
            let env = rclone_env(
                "bgcs",
                &[
                    ("type", "google cloud storage"),
                    ("anonymous", "true"),
                    ("endpoint", &format!("{}/storage/v1/", gcs.endpoint)),
                ],
            );
            Target {
                name: name.into(),
                block: (
                    "gcs/bench".into(),
                    set(&[
                        ("bucket", BUCKET),
                        ("endpoint", &gcs.endpoint),
                        ("anonymous", "true"),
                    ]),
                ),
                rclone: Some((env, format!("bgcs:{BUCKET}"))),
                rclone_skip: None,
                rclone_folders: None,
                served: None,
                prefect: None,
                wire: None,
                _guard: Box::new(gcs),
            }
        }
        "sftp" => {
            let sshd = Sshd::start()?;
            let port = sshd.port.to_string();
            let key = sshd.client_key.to_string_lossy().into_owned();
            let known = sshd.known_hosts.to_string_lossy().into_owned();
            let env = rclone_env(
                "bsftp",
                &[
                    ("type", "sftp"),
                    ("host", &sshd.host),
                    ("port", &port),
                    ("user", &sshd.user),
                    ("key_file", &key),
                    ("known_hosts_file", &known),
                ],
            );
            let rroot = format!("bsftp:{}/rclone", sshd.data_dir.display());
            Target {
                name: name.into(),
                block: (
                    "remote-file-system/bench".into(),
                    set(&[
                        ("basepath", &sshd.url("blockctl")),
                        ("username", &sshd.user),
                        ("private_key_path", &key),
                        ("known_hosts", &known),
                    ]),
                ),
                rclone: Some((env, rroot)),
                rclone_skip: None,
                rclone_folders: None,
                served: None,
                prefect: None,
                // Its known_hosts names the server's port: no proxy in between.
                wire: None,
                _guard: Box::new(sshd),
            }
        }
        "webdav" => {
            let dav = WsgiDav::start()?;
            let env = rclone_env(
                "bdav",
                &[
                    ("type", "webdav"),
                    ("url", &format!("http://127.0.0.1:{}/", dav.port)),
                    ("vendor", "other"),
                    ("user", &dav.user),
                    ("pass", &obscure(&dav.password)?),
                ],
            );
            Target {
                name: name.into(),
                block: (
                    "remote-file-system/bench".into(),
                    set(&[
                        ("basepath", &dav.url("blockctl")),
                        ("username", &dav.user),
                        ("password", &dav.password),
                    ]),
                ),
                rclone: Some((env, "bdav:rclone".into())),
                rclone_skip: None,
                rclone_folders: None,
                served: None,
                prefect: None,
                wire: None,
                _guard: Box::new(dav),
            }
        }
        "http" => {
            let web = StaticHttp::start()?;
            let env = rclone_env("bhttp", &[("type", "http"), ("url", &web.url(""))]);
            Target {
                name: name.into(),
                block: (
                    "remote-file-system/bench".into(),
                    set(&[("basepath", &web.url(""))]),
                ),
                rclone: Some((env, "bhttp:".into())),
                rclone_skip: None,
                rclone_folders: None,
                served: Some(web.root.clone()),
                prefect: None,
                wire: None,
                _guard: Box::new(web),
            }
        }
        "ftp" => {
            let ftpd = PyFtpd::start()?;
            let port = ftpd.port.to_string();
            let env = rclone_env(
                "bftp",
                &[
                    ("type", "ftp"),
                    ("host", "127.0.0.1"),
                    ("port", &port),
                    ("user", &ftpd.user),
                    ("pass", &obscure(&ftpd.password)?),
                ],
            );
            Target {
                name: name.into(),
                block: (
                    "remote-file-system/bench".into(),
                    set(&[
                        ("basepath", &ftpd.url("blockctl")),
                        ("username", &ftpd.user),
                        ("password", &ftpd.password),
                    ]),
                ),
                rclone: Some((env, "bftp:rclone".into())),
                rclone_skip: None,
                rclone_folders: Some(ftpd.root.join("rclone")),
                served: None,
                prefect: None,
                // Passive data connections go straight to the server, past any proxy.
                wire: None,
                _guard: Box::new(ftpd),
            }
        }
        _ => {
            let smb = Samba::start()?;
            let port = smb.port.to_string();
            let rclone = if rclone_skip.is_none() {
                let out = Command::new("rclone")
                    .args(["obscure", &smb.password])
                    .output()
                    .map_err(|e| e.to_string())?;
                let obscured = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let env = rclone_env(
                    "bsmb",
                    &[
                        ("type", "smb"),
                        ("host", &smb.host),
                        ("port", &port),
                        ("user", &smb.user),
                        ("pass", &obscured),
                    ],
                );
                Some((env, format!("bsmb:{}", smb.share)))
            } else {
                None
            };
            Target {
                name: name.into(),
                block: (
                    "smb/bench".into(),
                    set(&[
                        ("host", &smb.host),
                        ("share", &smb.share),
                        ("port", &port),
                        ("username", &smb.user),
                        ("password", &smb.password),
                    ]),
                ),
                rclone,
                rclone_skip: None,
                rclone_folders: None,
                served: None,
                prefect: None,
                wire: None,
                _guard: Box::new(smb),
            }
        }
    };
    if rclone_skip.is_none() {
        rclone_skip = t.rclone_skip.clone();
    }
    let wire = if ["sftp", "ftp"].contains(&name) {
        None
    } else {
        wire_for(&t)?
    };
    Ok(Target {
        rclone_skip,
        wire,
        ..t
    })
}

/// An account SAS (blob service, every resource type, read/write/delete/list/add/create),
/// valid until 2099: rclone 1.60 reaches Azurite only through `sas_url`.
pub(crate) fn account_sas(account: &str, key: &str) -> Result<String, String> {
    let key = STANDARD.decode(key).map_err(|e| e.to_string())?;
    let (sv, ss, srt, sp, se, spr) = (
        "2019-12-12",
        "b",
        "sco",
        "rwdlac",
        "2099-01-01T00:00:00Z",
        "https,http",
    );
    let to_sign = format!("{account}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n");
    let sig = STANDARD.encode(hmac_sha256(&key, to_sign.as_bytes()));
    let sig = sig
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    Ok(format!(
        "sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={se}&spr={}&sig={sig}",
        spr.replace(',', "%2C")
    ))
}
