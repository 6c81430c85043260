//! stub
#[derive(Clone, Debug, Default)]
pub struct FetchSettings {}
#[derive(Clone, Debug, Default)]
pub struct S3Settings {}
pub struct Cache {}
