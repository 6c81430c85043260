//! A real S3 server for tests: s3s-fs, in-process, on a free loopback port
//! (plain or TLS). It checks every request's SigV4 signature against one
//! access key and secret, like AWS or MinIO, and keeps objects as files
//! under `root/<bucket>/<key>`. Stopped when dropped.

use std::path::{Path, PathBuf};

use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use super::serve::{Server, TestCa};

pub const ACCESS_KEY: &str = "HOISTTESTACCESSKEY01";
pub const SECRET_KEY: &str = "hoist-test-secret-9c4e1f7a2b";

pub struct S3 {
    pub server: Server,
    pub root: PathBuf,
}

impl S3 {
    pub fn start(root: &Path, ca: Option<&TestCa>) -> S3 {
        std::fs::create_dir_all(root).unwrap();
        let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        S3 {
            server: Server::start(ca, service),
            root: root.to_path_buf(),
        }
    }

    pub fn endpoint(&self) -> String {
        self.server.base_url()
    }

    /// Puts a local file into the store as `s3://bucket/key`; returns that URL.
    pub fn put_file(&self, bucket: &str, key: &str, file: &Path) -> String {
        let dest = self.root.join(bucket).join(key);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(file, &dest).unwrap();
        format!("s3://{bucket}/{key}")
    }
}
