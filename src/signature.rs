//! Who may change a server: signature checks on what hoist is asked to run.
//!
//! Two independent gates, both off unless the host config turns them on:
//!
//! - **Commits** (`repo.allowed_signers_file`): the branch tip must carry an
//!   SSH signature (`git commit -S` with `gpg.format=ssh`) by a key listed in
//!   an OpenSSH allowed_signers file. Whoever can push to the config repo (or
//!   sit between it and the server) then still cannot get a commit applied.
//!   A line's `namespaces`, `valid-after` and `valid-before` options are
//!   honoured as `git verify-commit` honours them: against the commit's
//!   committer date (docs/security.md says why that date).
//! - **Artifacts** (`storage.trusted_keys`): every artifact needs a minisign
//!   signature, fetched from the manifest's `signature_url`, by one of the
//!   trusted keys. Whoever can write to the object store then cannot get
//!   their own build run, even with a manifest naming its sha256.
//!
//! Both are pure checks over bytes handed in by the edges (`source` reads
//! the commit's signature, `engine` fetches the .minisig); a failure is a
//! one-sentence reason that becomes the commit status `error`.

use std::io::Read;
use std::path::Path;

/// The git signature namespace (`git commit -S` signs with `-n git`).
const GIT_NAMESPACE: &str = "git";

/// One line of an allowed_signers file.
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    pub principals: String,
    pub key: ssh_key::PublicKey,
    /// `namespaces="..."`: patterns the signature's namespace must match.
    pub namespaces: Option<String>,
    /// `valid-after`, as Unix time: the key signs nothing dated before it.
    pub valid_after: Option<i64>,
    /// `valid-before`, as Unix time: the key signs nothing dated after it.
    pub valid_before: Option<i64>,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

/// The keys of an OpenSSH allowed_signers file (`ssh-keygen -Y verify`
/// format: `principals [options] keytype base64 [comment]`).
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    pub signers: Vec<AllowedSigner>,
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<AllowedSigners, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read repo.allowed_signers_file {}: {e}",
                path.display()
            )
        })?;
        AllowedSigners::parse(&text)
            .map_err(|(line, why)| format!("{}:{line}: {why}", path.display()))
    }

    /// Parses the file's text; an error names the line. Options are those
    /// of ssh-keygen: `cert-authority` (such lines grant nothing here: git
    /// commits are not signed with certificates), `namespaces`,
    /// `valid-after`, `valid-before`; any other option is an error, as it
    /// is for ssh-keygen, so a typo never silently widens who may deploy.
    pub fn parse(text: &str) -> Result<AllowedSigners, (usize, String)> {
        let mut signers = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_fields(line);
            let Some(principals) = fields.first() else {
                continue;
            };
            let mut rest = &fields[1..];
            let mut options = "";
            if let Some(first) = rest.first()
                && !is_key_type(first)
            {
                options = first;
                rest = &rest[1..];
            }
            let (Some(kind), Some(b64)) = (rest.first(), rest.get(1)) else {
                return Err((i + 1, "expected `principals [options] keytype key`".into()));
            };
            let key = ssh_key::PublicKey::from_openssh(&format!("{kind} {b64}")).map_err(|e| {
                (
                    i + 1,
                    format!("the key is not a valid SSH public key ({e})"),
                )
            })?;
            let mut signer = AllowedSigner {
                principals: principals.to_string(),
                key,
                namespaces: None,
                valid_after: None,
                valid_before: None,
                line: i + 1,
            };
            let mut ca = false;
            for (k, v) in parse_options(options) {
                let once = |slot: bool| {
                    if slot {
                        Err((i + 1, format!("the option {k} appears twice")))
                    } else {
                        Ok(())
                    }
                };
                match k.to_ascii_lowercase().as_str() {
                    "cert-authority" => ca = true,
                    "namespaces" => {
                        once(signer.namespaces.is_some())?;
                        signer.namespaces = Some(v);
                    }
                    "valid-after" => {
                        once(signer.valid_after.is_some())?;
                        signer.valid_after = Some(
                            parse_time(&v).map_err(|why| (i + 1, format!("valid-after {why}")))?,
                        );
                    }
                    "valid-before" => {
                        once(signer.valid_before.is_some())?;
                        signer.valid_before = Some(
                            parse_time(&v).map_err(|why| (i + 1, format!("valid-before {why}")))?,
                        );
                    }
                    _ => {
                        return Err((
                            i + 1,
                            format!(
                                "unknown option {k:?} (allowed_signers takes cert-authority, namespaces, valid-after, valid-before)"
                            ),
                        ));
                    }
                }
            }
            if let (Some(a), Some(b)) = (signer.valid_after, signer.valid_before)
                && b <= a
            {
                return Err((i + 1, "valid-before is not after valid-after".into()));
            }
            if !ca {
                signers.push(signer);
            }
        }
        Ok(AllowedSigners { signers })
    }

    /// Checks an armored SSH signature (as git stores it in the commit's
    /// `gpgsig` header) over `signed` (the commit without that header).
    /// Returns the principals of the key that signed.
    ///
    /// As `git verify-commit` does through ssh-keygen: the key must be on a
    /// line of the file whose `namespaces` (if any) admits "git" and whose
    /// `valid-after`/`valid-before` (if any) hold the commit's committer
    /// date. The first line of that key that allows it wins; when none
    /// does, the reason is the first such line's.
    pub fn verify(&self, signature: &[u8], signed: &[u8]) -> Result<String, String> {
        let text =
            std::str::from_utf8(signature).map_err(|_| "its signature is not text".to_string())?;
        if !text
            .trim_start()
            .starts_with("-----BEGIN SSH SIGNATURE-----")
        {
            return Err("it is signed, but not with an SSH key (gpg.format=ssh)".into());
        }
        let sig = ssh_key::SshSig::from_pem(text.trim())
            .map_err(|e| format!("its SSH signature cannot be read ({e})"))?;
        if sig.namespace() != GIT_NAMESPACE {
            return Err(format!(
                "its SSH signature is for namespace {:?}, not {GIT_NAMESPACE:?}",
                sig.namespace()
            ));
        }
        let lines: Vec<&AllowedSigner> = self
            .signers
            .iter()
            .filter(|s| s.key.key_data() == sig.public_key())
            .collect();
        let Some(first) = lines.first() else {
            let fp =
                ssh_key::PublicKey::from(sig.public_key().clone()).fingerprint(Default::default());
            return Err(format!(
                "it is signed by {fp}, which is not in the allowed signers"
            ));
        };
        first
            .key
            .verify(GIT_NAMESPACE, signed, &sig)
            .map_err(|e| format!("its SSH signature does not verify ({e})"))?;
        let mut reason = None;
        for signer in &lines {
            match signer.allows(sig.namespace(), signed) {
                Ok(()) => return Ok(signer.principals.clone()),
                Err(why) => {
                    reason.get_or_insert(why);
                }
            }
        }
        Err(reason.unwrap_or_else(|| "no allowed_signers line admits it".into()))
    }
}

impl AllowedSigner {
    /// Whether this line's options let its key sign `signed` (a commit) in
    /// `namespace`.
    fn allows(&self, namespace: &str, signed: &[u8]) -> Result<(), String> {
        let who = format!(
            "the key of {} (allowed_signers line {})",
            self.principals, self.line
        );
        if let Some(ns) = &self.namespaces
            && !namespace_allowed(ns, namespace)
        {
            return Err(format!(
                "{who} may sign only in namespaces {ns:?}, not {namespace:?}"
            ));
        }
        if self.valid_after.is_none() && self.valid_before.is_none() {
            return Ok(());
        }
        let Some(at) = committer_time(signed) else {
            return Err(format!(
                "{who} has a validity period, and the commit has no committer date to check it against"
            ));
        };
        if let Some(after) = self.valid_after
            && at < after
        {
            return Err(format!(
                "{who} is valid only from {} (valid-after), and the commit is dated {}",
                show_time(after),
                show_time(at)
            ));
        }
        if let Some(before) = self.valid_before
            && at > before
        {
            return Err(format!(
                "{who} expired at {} (valid-before), and the commit is dated {}",
                show_time(before),
                show_time(at)
            ));
        }
        Ok(())
    }
}

/// OpenSSH's pattern-list match: comma-separated globs, `!` negates; a
/// negated match refuses, otherwise any positive match admits.
fn namespace_allowed(patterns: &str, namespace: &str) -> bool {
    let mut admitted = false;
    for p in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match p.strip_prefix('!') {
            Some(neg) if crate::config::glob_match(neg, namespace) => return false,
            Some(_) => {}
            None if crate::config::glob_match(p, namespace) => admitted = true,
            None => {}
        }
    }
    admitted
}

/// The committer date of a commit object (`committer Name <mail> 1700000000
/// +0100`), as Unix time: what git hands ssh-keygen as `-Overify-time`.
fn committer_time(commit: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(commit).ok()?;
    let header = text.split("\n\n").next()?;
    let line = header.lines().find_map(|l| l.strip_prefix("committer "))?;
    let after_mail = &line[line.rfind('>')? + 1..];
    after_mail.split_whitespace().next()?.parse().ok()
}

/// Parses an allowed_signers time as ssh-keygen does: `YYYYMMDD`,
/// `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, in UTC with a `Z` (or `UTC`)
/// suffix, else in the server's local time.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || {
        format!("{s:?} is not a time like 20260131, 202601311200 or 20260131120000 (add Z for UTC)")
    };
    let upper = s.to_ascii_uppercase();
    let (digits, utc) = if let Some(d) = upper.strip_suffix("UTC") {
        (d, true)
    } else if let Some(d) = upper.strip_suffix('Z') {
        (d, true)
    } else {
        (upper.as_str(), false)
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|d| d.parse::<i64>().ok());
    let year = num(0..4).ok_or_else(bad)?;
    let month = num(4..6).ok_or_else(bad)?;
    let day = num(6..8).ok_or_else(bad)?;
    let hour = num(8..10).unwrap_or(0);
    let minute = num(10..12).unwrap_or(0);
    let second = num(12..14).unwrap_or(0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return Err(bad());
    }
    let t = if utc {
        days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
    } else {
        local_time(year, month, day, hour, minute, second).ok_or_else(bad)?
    };
    if t <= 0 {
        return Err(bad());
    }
    Ok(t)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A wall-clock time in the server's time zone (as ssh-keygen's mktime).
fn local_time(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    // SAFETY: `tm` is a plain C struct, zeroed then filled in; mktime
    // reads and normalizes it and touches nothing else we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = i32::try_from(y - 1900).ok()?;
    tm.tm_mon = i32::try_from(mo - 1).ok()?;
    tm.tm_mday = i32::try_from(d).ok()?;
    tm.tm_hour = i32::try_from(h).ok()?;
    tm.tm_min = i32::try_from(mi).ok()?;
    tm.tm_sec = i32::try_from(s).ok()?;
    tm.tm_isdst = -1;
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(t)
}

/// `2026-01-31T12:00:00Z`.
fn show_time(t: i64) -> String {
    match u64::try_from(t) {
        Ok(secs) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        )
        .to_string(),
        Err(_) => format!("{t} (Unix time)"),
    }
}

fn is_key_type(s: &str) -> bool {
    s.starts_with("ssh-")
        || s.starts_with("ecdsa-sha2-")
        || s.starts_with("sk-ssh-")
        || s.starts_with("sk-ecdsa-")
}

/// Splits on whitespace, keeping double-quoted runs (`namespaces="git,file"`) whole.
fn split_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `a,b="x,y",c` → [(a, ""), (b, "x,y"), (c, "")].
fn parse_options(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut push = |cur: &mut String| {
        if !cur.is_empty() {
            let (k, v) = cur.split_once('=').unwrap_or((cur.as_str(), ""));
            out.push((k.to_string(), v.trim_matches('"').to_string()));
            cur.clear();
        }
    };
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => push(&mut cur),
            c => cur.push(c),
        }
    }
    push(&mut cur);
    out
}

/// The minisign public keys of `storage.trusted_keys`.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<minisign_verify::PublicKey>,
}

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedKeys({} keys)", self.keys.len())
    }
}

impl TrustedKeys {
    /// Each entry is a key as minisign prints it: the base64 line (`RW...`),
    /// optionally preceded by its `untrusted comment:` line.
    pub fn parse(entries: &[String]) -> Result<TrustedKeys, String> {
        let mut keys = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let b64 = entry
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
                .unwrap_or("");
            let key = minisign_verify::PublicKey::from_base64(b64).map_err(|e| {
                format!(
                    "storage.trusted_keys entry {} is not a minisign public key ({e})",
                    i + 1
                )
            })?;
            keys.push(key);
        }
        Ok(TrustedKeys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the minisign signature `sig` (the .minisig file's text) over
    /// the file at `artifact`, streaming it. Blocking.
    pub fn verify_file(&self, artifact: &Path, sig: &str) -> Result<(), String> {
        let sig = minisign_verify::Signature::decode(sig)
            .map_err(|e| format!("the signature cannot be read ({e})"))?;
        // The key id in the signature picks the key; a wrong id means no
        // trusted key made it.
        let mut last = "no trusted key made it".to_string();
        for key in &self.keys {
            let mut v = match key.verify_stream(&sig) {
                Ok(v) => v,
                Err(minisign_verify::Error::UnexpectedKeyId) => continue,
                Err(e) => {
                    last = format!("it is not valid ({e})");
                    continue;
                }
            };
            let mut f = std::fs::File::open(artifact)
                .map_err(|e| format!("cannot read {}: {e}", artifact.display()))?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = f
                    .read(&mut buf)
                    .map_err(|e| format!("cannot read {}: {e}", artifact.display()))?;
                if n == 0 {
                    break;
                }
                v.update(&buf[..n]);
            }
            return match v.finalize() {
                Ok(()) => Ok(()),
                Err(_) => Err("it does not match the artifact".into()),
            };
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKevInHmXA/k2CmsaB9BwCu2Sa89AfEwPIG0w0SbFIh2";

    #[test]
    fn allowed_signers_lines_with_options_and_comments() {
        let text = format!(
            "# who may deploy\n\nalice@example.com {KEY} alice's laptop\n\
             bob@example.com,ci namespaces=\"git,file\",valid-after=\"20250101Z\" {KEY}\n\
             carol namespaces=\"file\",valid-before=\"202601311230UTC\" {KEY}\n\
             ca@example.com cert-authority {KEY}\n"
        );
        let s = AllowedSigners::parse(&text).unwrap();
        let names: Vec<&str> = s.signers.iter().map(|s| s.principals.as_str()).collect();
        assert_eq!(names, ["alice@example.com", "bob@example.com,ci", "carol"]);
        assert_eq!(s.signers[1].namespaces.as_deref(), Some("git,file"));
        assert_eq!(s.signers[1].valid_after, Some(1_735_689_600));
        assert_eq!(s.signers[2].valid_before, Some(1_769_862_600));
        assert_eq!(s.signers[2].line, 5);
    }

    #[test]
    fn bad_options_are_errors_naming_the_line() {
        for (opts, want) in [
            (
                "valid-before=\"2026\"",
                "valid-before \"2026\" is not a time",
            ),
            ("valid-after=\"20261301Z\"", "valid-after"),
            (
                "valid-befor=\"20260101Z\"",
                "unknown option \"valid-befor\"",
            ),
            ("namespaces=\"git\",namespaces=\"file\"", "appears twice"),
            (
                "valid-after=\"20260101Z\",valid-before=\"20250101Z\"",
                "not after valid-after",
            ),
        ] {
            let e = AllowedSigners::parse(&format!("# c\nx {opts} {KEY}\n")).unwrap_err();
            assert_eq!(e.0, 2, "{e:?}");
            assert!(e.1.contains(want), "{e:?} lacks {want}");
        }
    }

    #[test]
    fn times_as_ssh_keygen_reads_them() {
        assert_eq!(parse_time("20260101Z"), Ok(1_767_225_600));
        assert_eq!(parse_time("20260101z"), Ok(1_767_225_600));
        assert_eq!(parse_time("20260101UTC"), Ok(1_767_225_600));
        assert_eq!(parse_time("202601011230Z"), Ok(1_767_270_600));
        assert_eq!(parse_time("20260101123045Z"), Ok(1_767_270_645));
        assert_eq!(parse_time("20240229Z"), Ok(1_709_164_800));
        for bad in [
            "",
            "2026",
            "2026010",
            "202601011",
            "20230229Z",
            "20261301Z",
            "20260132Z",
            "202601012400Z",
            "20260101126000Z",
            "2026-01-01",
            "19691231Z",
            "abcdefghZ",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        // Without Z: the server's local time, within a day of UTC.
        let local = parse_time("20260101").unwrap();
        assert!((local - 1_767_225_600).abs() <= 14 * 3600, "{local}");
    }

    #[test]
    fn namespace_patterns() {
        assert!(namespace_allowed("git", "git"));
        assert!(namespace_allowed("file,git", "git"));
        assert!(namespace_allowed("g*", "git"));
        assert!(namespace_allowed("gi?", "git"));
        assert!(!namespace_allowed("file", "git"));
        assert!(!namespace_allowed("!git,*", "git"));
        assert!(namespace_allowed("!file,*", "git"));
        assert!(!namespace_allowed("", "git"));
    }

    #[test]
    fn the_committer_date_is_read_from_the_commit() {
        let commit = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
            author A <a@x> 1600000000 +0000\n\
            committer C <c> d> 1767225600 +0100\n\
            \n\
            committer X <x> 1 +0000\n";
        assert_eq!(committer_time(commit), Some(1_767_225_600));
        assert_eq!(committer_time(b"tree x\n\nno committer\n"), None);
    }

    /// A commit-like payload signed by a fresh ssh-keygen key; returns
    /// (public key line, signature, payload).
    fn signed_commit(date: i64) -> (String, Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        let run = |cmd: &mut std::process::Command| {
            let out = cmd.output().expect("ssh-keygen runs");
            assert!(out.status.success(), "{out:?}");
        };
        run(std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "t", "-f"])
            .arg(&key));
        let payload = format!(
            "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@x> {date} +0000\ncommitter A <a@x> {date} +0000\n\nmsg\n"
        );
        let data = dir.path().join("commit");
        std::fs::write(&data, &payload).unwrap();
        run(std::process::Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", "git", "-f"])
            .arg(&key)
            .arg(&data));
        let sig = std::fs::read(data.with_extension("sig")).unwrap();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        (public.trim().to_string(), sig, payload.into_bytes())
    }

    #[test]
    fn validity_periods_and_namespaces_are_checked_against_the_committer_date() {
        // Committed 2026-03-01T00:00:00Z.
        let (key, sig, payload) = signed_commit(1_772_323_200);
        let check = |opts: &str| {
            AllowedSigners::parse(&format!("deployer {opts} {key}\n"))
                .unwrap()
                .verify(&sig, &payload)
        };
        assert_eq!(check("").as_deref(), Ok("deployer"));
        assert!(check("valid-before=\"20260301000001Z\"").is_ok());
        assert!(
            check("valid-before=\"20260301Z\"").is_ok(),
            "the bound itself is valid"
        );
        assert!(check("valid-after=\"20260301Z\"").is_ok());
        assert!(check("valid-after=\"20250101Z\",valid-before=\"20270101Z\"").is_ok());
        assert!(check("namespaces=\"file,git\"").is_ok());
        let e = check("valid-before=\"20260228Z\"").unwrap_err();
        assert_eq!(
            e,
            "the key of deployer (allowed_signers line 1) expired at 2026-02-28T00:00:00Z (valid-before), and the commit is dated 2026-03-01T00:00:00Z"
        );
        let e = check("valid-after=\"20260302Z\"").unwrap_err();
        assert!(
            e.contains("is valid only from 2026-03-02T00:00:00Z (valid-after)"),
            "{e}"
        );
        let e = check("namespaces=\"file\"").unwrap_err();
        assert!(
            e.contains("may sign only in namespaces \"file\", not \"git\""),
            "{e}"
        );
        // A second line for the same key that allows it wins.
        let two = AllowedSigners::parse(&format!(
            "old valid-before=\"20260101Z\" {key}\nnew valid-after=\"20260101Z\" {key}\n"
        ))
        .unwrap();
        assert_eq!(two.verify(&sig, &payload).as_deref(), Ok("new"));
        // The signature is checked before the dates: a forged payload is
        // refused as such, not as expired.
        let forged = String::from_utf8(payload.clone())
            .unwrap()
            .replace("msg", "evil");
        let e = AllowedSigners::parse(&format!("d valid-before=\"20200101Z\" {key}\n"))
            .unwrap()
            .verify(&sig, forged.as_bytes())
            .unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
    }

    #[test]
    fn a_bad_line_is_named() {
        let e = AllowedSigners::parse("a ssh-ed25519 notbase64\n").unwrap_err();
        assert_eq!(e.0, 1);
        let e = AllowedSigners::parse(&format!("{KEY}\nx\n")).unwrap_err();
        assert_eq!(e.0, 1, "{e:?}");
    }

    #[test]
    fn gpg_and_garbage_signatures_are_refused() {
        let s = AllowedSigners::parse(&format!("a {KEY}\n")).unwrap();
        let e = s
            .verify(b"-----BEGIN PGP SIGNATURE-----\nx\n", b"data")
            .unwrap_err();
        assert!(e.contains("not with an SSH key"), "{e}");
        let e = s
            .verify(
                b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n",
                b"data",
            )
            .unwrap_err();
        assert!(e.contains("cannot be read"), "{e}");
    }

    #[test]
    fn trusted_keys_accept_the_line_or_the_whole_file() {
        let b64 = "RWRWB77VroWZA/FGSjsN8fH4aUneCJS7vTk0dDtgRy2ILYPGIP4AnzNZ";
        let full = format!("untrusted comment: minisign public key\n{b64}\n");
        let k = TrustedKeys::parse(&[b64.to_string(), full]).unwrap();
        assert_eq!(k.keys.len(), 2);
        let e = TrustedKeys::parse(&["nope".to_string()]).unwrap_err();
        assert!(e.contains("entry 1"), "{e}");
    }
}
