//! Streamed uploads: one request when the body fits in a part, else a multipart upload with
//! parts in flight, recorded in a marker under `.blocks/uploads/` so `gc` can abort what a
//! killed put left.

use super::*;

impl ObjectStoreBlock {
    /// Uploads what arrives on `rx` to `key`: one request when it fits in a part, else a
    /// multipart upload with parallel parts. The object appears only if `producer` succeeds.
    pub(super) async fn upload<T: Send + 'static>(
        &self,
        at: &BlockPath,
        key: &ObjPath,
        mut rx: mpsc::Receiver<Bytes>,
        producer: tokio::task::JoinHandle<Result<T>>,
        track: bool,
    ) -> Result<(T, Option<String>)> {
        let mut head: Vec<Bytes> = Vec::new();
        let mut buffered = 0usize;
        while buffered < self.part_size {
            match rx.recv().await {
                Some(b) => {
                    buffered += b.len();
                    head.push(b);
                }
                None => break,
            }
        }
        if buffered < self.part_size {
            let out = producer.await??;
            let payload: PutPayload = head.into_iter().collect();
            let put = self.store.put(key, payload).await.map_err(self.fail(at))?;
            return Ok((out, put.e_tag));
        }
        if let (true, Some(mp)) = (track, self.multipart.clone()) {
            return self.upload_tracked(at, key, mp, head, rx, producer).await;
        }
        let upload = self.store.put_multipart(key).await.map_err(self.fail(at))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        for b in head {
            writer.put(b);
        }
        let sent: Result<()> = async {
            while let Some(b) = rx.recv().await {
                writer
                    .wait_for_capacity(self.concurrency)
                    .await
                    .map_err(self.fail(at))?;
                writer.put(b);
            }
            Ok(())
        }
        .await;
        drop(rx);
        let produced = producer.await.map_err(Error::from).and_then(|r| r);
        match (sent, produced) {
            (Ok(()), Ok(out)) => {
                let put = writer.finish().await.map_err(self.fail(at))?;
                Ok((out, put.e_tag))
            }
            (Err(e), _) | (Ok(()), Err(e)) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// A multipart upload with its id recorded in a marker object until it completes or is
    /// aborted; parts of `part_size` go up `concurrency` at a time, in order.
    pub(super) async fn upload_tracked<T: Send + 'static>(
        &self,
        at: &BlockPath,
        key: &ObjPath,
        mp: Arc<dyn MultipartStore>,
        head: Vec<Bytes>,
        rx: mpsc::Receiver<Bytes>,
        producer: tokio::task::JoinHandle<Result<T>>,
    ) -> Result<(T, Option<String>)> {
        let id = mp.create_multipart(key).await.map_err(self.fail(at))?;
        let marker = self.key(at, &format!("{UPLOADS}/{}.json", upload_name(key, &id)))?;
        let record = serde_json::to_vec(&UploadMarker {
            key: key.to_string(),
            id: id.clone(),
        })
        .expect("a marker serializes");
        if let Err(e) = self.store.put(&marker, record.into()).await {
            let _ = mp.abort_multipart(key, &id).await;
            return Err(self.fail(at)(e));
        }
        // The chunks, regrouped into parts of `part_size` (no copying: a part is a list of
        // the chunks' buffers), go up `concurrency` at a time and complete in order.
        let part_size = self.part_size;
        let parts = stream::unfold(
            (head.into_iter(), rx, false),
            move |(mut head, mut rx, ended)| async move {
                if ended {
                    return None;
                }
                let (mut part, mut len) = (Vec::new(), 0usize);
                while len < part_size {
                    let next = match head.next() {
                        Some(b) => Some(b),
                        None => rx.recv().await,
                    };
                    let Some(b) = next else {
                        return (!part.is_empty()).then_some((part, (head, rx, true)));
                    };
                    len += b.len();
                    part.push(b);
                }
                Some((part, (head, rx, false)))
            },
        );
        let sent: Result<Vec<PartId>> = parts
            .enumerate()
            .map(|(i, part)| {
                let (mp, key, id) = (mp.clone(), key.clone(), id.clone());
                let payload: PutPayload = part.into_iter().collect();
                async move { mp.put_part(&key, &id, i, payload).await }
            })
            .buffered(self.concurrency)
            .map_err(self.fail(at))
            .try_collect()
            .await;
        let produced = producer.await.map_err(Error::from).and_then(|r| r);
        let result = match (sent, produced) {
            (Ok(parts), Ok(out)) => match mp.complete_multipart(key, &id, parts).await {
                Ok(put) => Ok((out, put.e_tag)),
                Err(e) => Err(self.fail(at)(e)),
            },
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        };
        if result.is_err() {
            let _ = mp.abort_multipart(key, &id).await;
        }
        let _ = self.store.delete(&marker).await;
        result
    }

    /// Aborts the multipart uploads whose markers are older than `cutoff` (unix ms) (a killed put's),
    /// and removes their markers; returns how many.
    pub(super) async fn abort_abandoned_uploads(&self, at: &BlockPath, cutoff: i64) -> Result<u64> {
        let Some(mp) = self.multipart.clone() else {
            return Ok(0);
        };
        let markers = self.listed(at, UPLOADS).await?;
        let base = self.key(at, "")?;
        let mut removed = 0;
        for m in markers
            .into_iter()
            .filter(|m| m.last_modified.timestamp_millis() < cutoff)
        {
            let body = self.store.get(&m.location).await.map_err(self.fail(at))?;
            let bytes = body.bytes().await.map_err(self.fail(at))?;
            // A marker that does not parse, or names an object elsewhere, is only removed.
            let upload = serde_json::from_slice::<UploadMarker>(&bytes)
                .ok()
                .and_then(|u| Some((ObjPath::parse(&u.key).ok()?, u.id)))
                .filter(|(key, _)| key.prefix_matches(&base));
            if let Some((key, id)) = upload {
                match mp.abort_multipart(&key, &id).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.fail(at)(e)),
                }
            }
            match self.store.delete(&m.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                Err(e) => return Err(self.fail(at)(e)),
            }
        }
        Ok(removed)
    }
}

/// What `.blocks/uploads/<name>.json` records of a multipart upload in progress.
#[derive(serde::Serialize, serde::Deserialize)]
struct UploadMarker {
    key: String,
    id: String,
}

/// A marker's name: a digest of the upload's key and id (an id may hold any character).
fn upload_name(key: &ObjPath, id: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(format!("{key}\n{id}"))[..16])
}
