//! An S3 backend whose cost per request is O(bytes sent), as a real object store's
//! is: `s3s-fs` for everything it does (buckets, PUT, multipart, copy, listings,
//! errors), with GetObject and HeadObject answered from metadata kept per object
//! version (size, ETag, attributes: learned once from `s3s-fs`, revalidated by a
//! `stat`, never recomputed) and bodies read in 256 KiB blocks from the byte the
//! range starts at. `s3s-fs` alone hashes the whole file on some requests and
//! streams in 4 KiB reads, which punishes exactly the chunked, ranged reads a cache
//! makes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use s3s_fs::FileSystem;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Body read size: large enough that a 16 MiB chunk is 64 reads.
const READ_BLOCK: usize = 256 * 1024;

#[derive(Clone)]
pub(crate) struct FastFs(Arc<Inner>);

pub(crate) struct Inner {
    inner: FileSystem,
    root: PathBuf,
    /// HEAD answers by object path, valid while the file's length and mtime hold.
    heads: Mutex<HashMap<PathBuf, (u64, SystemTime, HeadObjectOutput)>>,
}

impl std::ops::Deref for FastFs {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl FastFs {
    pub(crate) fn new(root: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Self(Arc::new(Inner {
            inner: FileSystem::new(root).map_err(|e| anyhow::anyhow!("s3s-fs: {e:?}"))?,
            root: root.to_owned(),
            heads: Mutex::default(),
        })))
    }

    /// Learns the HEAD answer of an object written straight into the directory
    /// (hashing it once, now, instead of on the first client request).
    pub(crate) async fn prime(&self, bucket: &str, key: &str) -> anyhow::Result<()> {
        let req = S3Request {
            input: (),
            method: http::Method::HEAD,
            uri: http::Uri::from_static("/"),
            headers: http::HeaderMap::new(),
            extensions: http::Extensions::new(),
            credentials: None,
            region: None,
            service: None,
            trailing_headers: None,
        };
        self.head(bucket, key, &req)
            .await
            .map_err(|e| anyhow::anyhow!("head {bucket}/{key}: {e:?}"))?;
        Ok(())
    }

    /// The object's file in s3s-fs's layout (root/bucket/key), for plain names;
    /// `None` for names s3s-fs resolves specially (`..`, leading `/`), which are
    /// left to s3s-fs itself.
    fn path_of(&self, bucket: &str, key: &str) -> Option<PathBuf> {
        let plain = |s: &str| !s.starts_with('/') && !s.split('/').any(|c| c == ".." || c == ".");
        (plain(bucket) && !bucket.contains('/') && plain(key)).then(|| self.root.join(bucket).join(key))
    }

    /// The object's HEAD answer, from `s3s-fs` the first time a version is seen.
    async fn head(&self, bucket: &str, key: &str, req: &S3Request<()>) -> S3Result<HeadObjectOutput> {
        let path = self.path_of(bucket, key).ok_or(S3Error::new(S3ErrorCode::InvalidArgument))?;
        let stat = tokio::fs::metadata(&path).await.ok().filter(|m| m.is_file());
        if let Some(m) = &stat {
            let mtime = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((len, t, out)) = heads.get(&path)
                && *len == m.len()
                && *t == mtime
            {
                return Ok(out.clone());
            }
        }
        let input = HeadObjectInput {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            ..Default::default()
        };
        let out = self
            .inner
            .head_object(bare(req).map_input(|()| input))
            .await?
            .output;
        if let Some(m) = stat {
            let mtime = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            self.heads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path, (m.len(), mtime, out.clone()));
        }
        Ok(out)
    }
}

/// A copy of a request's context (identity, headers) to ask `s3s-fs` with.
fn bare<T>(req: &S3Request<T>) -> S3Request<()> {
    S3Request {
        input: (),
        method: req.method.clone(),
        uri: req.uri.clone(),
        headers: req.headers.clone(),
        extensions: http::Extensions::new(),
        credentials: req.credentials.clone(),
        region: req.region.clone(),
        service: req.service.clone(),
        trailing_headers: None,
    }
}

fn etag_matches(cond: &ETagCondition, etag: Option<&ETag>) -> bool {
    match cond {
        ETagCondition::Any => etag.is_some(),
        ETagCondition::ETag(want) => etag.is_some_and(|e| e.value() == want.value()),
    }
}

#[async_trait::async_trait]
impl S3 for FastFs {
    // Everything but reads goes to s3s-fs as it is.
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        self.inner.create_bucket(req).await
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.inner.delete_bucket(req).await
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.inner.head_bucket(req).await
    }

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        self.inner.list_buckets(req).await
    }

    async fn get_bucket_location(&self, req: S3Request<GetBucketLocationInput>) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.inner.get_bucket_location(req).await
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        self.inner.put_object(req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        self.inner.copy_object(req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.inner.delete_object(req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.inner.delete_objects(req).await
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        self.inner.list_objects(req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.inner.list_objects_v2(req).await
    }

    async fn create_multipart_upload(&self, req: S3Request<CreateMultipartUploadInput>) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.inner.create_multipart_upload(req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.inner.upload_part(req).await
    }

    async fn upload_part_copy(&self, req: S3Request<UploadPartCopyInput>) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.inner.upload_part_copy(req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        self.inner.list_parts(req).await
    }

    async fn complete_multipart_upload(&self, req: S3Request<CompleteMultipartUploadInput>) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.inner.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(&self, req: S3Request<AbortMultipartUploadInput>) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.inner.abort_multipart_upload(req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        if self.path_of(&req.input.bucket, &req.input.key).is_none() {
            return self.inner.head_object(req).await;
        }
        let out = self.head(&req.input.bucket, &req.input.key, &bare(&req)).await?;
        if let Some(c) = &req.input.if_match
            && !etag_matches(c, out.e_tag.as_ref())
        {
            return Err(S3Error::new(S3ErrorCode::PreconditionFailed));
        }
        Ok(S3Response::new(out))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let Some(path) = self.path_of(&req.input.bucket, &req.input.key) else {
            return self.inner.get_object(req).await;
        };
        let input = &req.input;
        let head = self.head(&input.bucket, &input.key, &bare(&req)).await?;
        if let Some(c) = &input.if_match
            && !etag_matches(c, head.e_tag.as_ref())
        {
            return Err(S3Error::new(S3ErrorCode::PreconditionFailed));
        }
        let len = head.content_length.unwrap_or(0) as u64;
        let (range, content_range) = match &input.range {
            None => (0..len, None),
            Some(r) => {
                let r = r.check(len)?;
                let cr = format!("bytes {}-{}/{len}", r.start, r.end.saturating_sub(1));
                (r, Some(cr))
            }
        };
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|_| S3Error::new(S3ErrorCode::NoSuchKey))?;
        file.seek(std::io::SeekFrom::Start(range.start))
            .await
            .map_err(|_| S3Error::new(S3ErrorCode::InternalError))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(
            file.take(range.end - range.start),
            READ_BLOCK,
        );
        // As S3: the whole object's checksums, on a whole-object read, when asked.
        let whole = range.start == 0 && range.end == len;
        let sums = whole && input.checksum_mode.as_ref().is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let out = GetObjectOutput {
            checksum_crc32: head.checksum_crc32.clone().filter(|_| sums),
            checksum_crc32c: head.checksum_crc32c.clone().filter(|_| sums),
            checksum_crc64nvme: head.checksum_crc64nvme.clone().filter(|_| sums),
            checksum_sha1: head.checksum_sha1.clone().filter(|_| sums),
            checksum_sha256: head.checksum_sha256.clone().filter(|_| sums),
            checksum_type: head.checksum_type.clone().filter(|_| sums),
            body: Some(StreamingBlob::wrap(stream)),
            content_length: Some((range.end - range.start) as i64),
            content_range,
            last_modified: head.last_modified,
            metadata: head.metadata,
            content_encoding: head.content_encoding,
            content_type: head.content_type,
            content_disposition: head.content_disposition,
            content_language: head.content_language,
            cache_control: head.cache_control,
            expires: head.expires,
            e_tag: head.e_tag,
            accept_ranges: Some("bytes".to_owned()),
            ..Default::default()
        };
        Ok(S3Response::new(out))
    }
}
