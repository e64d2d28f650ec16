//! The lock every writer of a key takes, across clients: a file beside the key created
//! exclusively with delete-on-close, so it exists exactly while held and a crashed writer
//! leaves none. It is SMB's [`LockFiles`], under the same wait loop as the other protocols'
//! locks, and makes the HEAD swap a compare-and-swap.

use async_trait::async_trait;
use storage_folders::lock::{LockFiles, TryLock};

use super::*;

/// A lock is a file beside the key created exclusively, with delete-on-close, and shared with
/// no one. It exists exactly while held; the server deletes it when its holder closes it or
/// its session ends (a crashed writer leaves no stale lock: it never reports when it was
/// made, so it is never broken).
#[async_trait]
impl LockFiles for Share {
    const STORE: &'static str = "SMB";
    const FIRST_PAUSE: Duration = Duration::from_millis(2);
    const LONGEST_PAUSE: Duration = Duration::from_millis(50);

    type Held = HeldLock;

    async fn try_lock(&self, lock: &str) -> Result<TryLock<HeldLock>, StoreError> {
        let (conn, tree) = self.session().await?;
        let request = lock_request(lock);
        let create = conn.execute(Command::Create, &request, Some(tree.tree_id));
        let frame = within(self.timeout(), create)
            .await
            .map_err(|e| store_error(format!("locking {lock}"), lock, e))?;
        let status = frame.header.status;
        if status == NtStatus::SUCCESS {
            let created = CreateResponse::unpack(&mut ReadCursor::new(&frame.body))
                .map_err(|e| store_error(format!("locking {lock}"), lock, e))?;
            return Ok(TryLock::Taken(HeldLock {
                conn,
                tree,
                file_id: Some(created.file_id),
                timeout: self.timeout(),
            }));
        }
        let busy = [
            NtStatus::OBJECT_NAME_COLLISION,
            NtStatus::DELETE_PENDING,
            NtStatus::SHARING_VIOLATION,
        ];
        if busy.contains(&status) {
            return Ok(TryLock::Held { made: None });
        }
        // A missing folder is NotFound: there is no file to guard there either.
        let e = smb2::Error::Protocol {
            status,
            command: Command::Create,
        };
        Err(store_error(format!("locking {lock}"), lock, e))
    }

    async fn make_dirs(&self, dir: &str) -> Result<(), StoreError> {
        Share::make_dirs(self, dir).await
    }

    async fn remove_lock(&self, lock: &str) -> Result<(), StoreError> {
        self.remove_file(lock).await
    }

    async fn unlock(&self, held: HeldLock) {
        held.release().await;
    }
}

/// The CREATE of a lock file; see [`Share`]'s [`LockFiles`].
fn lock_request(name: &str) -> CreateRequest {
    const DELETE: u32 = 0x0001_0000;
    const FILE_READ_ATTRIBUTES: u32 = 0x0000_0080;
    const SYNCHRONIZE: u32 = 0x0010_0000;
    const FILE_ATTRIBUTE_NORMAL: u32 = 0x0000_0080;
    const FILE_NON_DIRECTORY_FILE: u32 = 0x0000_0040;
    const FILE_DELETE_ON_CLOSE: u32 = 0x0000_1000;
    CreateRequest {
        requested_oplock_level: OplockLevel::None,
        impersonation_level: ImpersonationLevel::Impersonation,
        desired_access: FileAccessMask::new(DELETE | FILE_READ_ATTRIBUTES | SYNCHRONIZE),
        file_attributes: FILE_ATTRIBUTE_NORMAL,
        share_access: ShareAccess(0),
        create_disposition: CreateDisposition::FileCreate,
        create_options: FILE_NON_DIRECTORY_FILE | FILE_DELETE_ON_CLOSE,
        name: smb2::encode_path(name).replace('/', "\\"),
        create_contexts: Vec::new(),
    }
}

/// A held lock; [`HeldLock::release`] gives it back (dropping it does too, in the background).
pub(crate) struct HeldLock {
    conn: Connection,
    tree: Arc<Tree>,
    file_id: Option<FileId>,
    timeout: Duration,
}

impl HeldLock {
    async fn release(mut self) {
        if let Some(id) = self.file_id.take() {
            let _ = within(self.timeout, self.tree.close_handle(&mut self.conn, id)).await;
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let Some(id) = self.file_id.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (mut conn, tree, limit) = (self.conn.clone(), self.tree.clone(), self.timeout);
            runtime.spawn(async move {
                let _ = within(limit, tree.close_handle(&mut conn, id)).await;
            });
        }
    }
}
