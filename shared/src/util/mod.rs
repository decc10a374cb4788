//! Neutral helpers that every layer may use: nothing here knows about
//! notebooks, GitHub or Google Cloud.
//!
//! # Layout
//! - [`fs`]: atomic writes that never replace anything but a regular file, and
//!   one wording for I/O errors.
//! - [`archive`]: unpacking a repository tarball without writing outside the checkout.
//! - [`uri`]: `file://` URIs and percent-encoded URL paths (the `url` crate's rules).
//! - [`secret`]: [`Secret`](secret::Secret), a string that never prints.
//! - [`hmac`]: HMAC-SHA256, for webhook signatures and link tokens.
//! - [`time`]: RFC 3339 timestamps (parsed and formatted with `jiff`).
//! - [`retry`]: the one backoff schedule (exponential, capped, with a server's hint).
//! - [`size`]: sizes written as `256MB` or `1GiB`, parsed and shown.

pub mod archive;
pub mod fs;
pub mod hmac;
pub mod retry;
pub mod secret;
pub mod size;
pub mod time;
pub mod uri;
