//! A real OpenSSH server for tests: `/usr/sbin/sshd` (Debian's
//! openssh-server, installed by scripts/test.sh) on a free loopback port,
//! with a host key, a deploy key and a known_hosts file generated for the
//! test. The git user is whoever runs the tests, so `git-upload-pack` on
//! PATH serves any repository by its absolute path. Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub port: u16,
    pub user: String,
    /// The private deploy key whose public half is authorized.
    pub deploy_key: PathBuf,
    /// A second key the server does not know.
    pub stranger_key: PathBuf,
    /// `[127.0.0.1]:PORT ssh-ed25519 ...`: the right host key.
    pub known_hosts: PathBuf,
    /// The same name with a different key, as after a server swap.
    pub known_hosts_changed: PathBuf,
    pub dir: PathBuf,
    child: Child,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "hoist-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs (install openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn public_key(path: &Path) -> String {
    let text = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let mut parts = text.split_whitespace();
    format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
}

impl Sshd {
    /// Starts sshd with its files in `dir` (created).
    pub fn start(dir: &Path) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: scripts/test.sh installs openssh-server (apt-get install openssh-server)"
        );
        std::fs::create_dir_all(dir).unwrap();
        // sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let host_key = dir.join("host_ed25519");
        let other_host_key = dir.join("other_host_ed25519");
        let deploy_key = dir.join("deploy_key");
        let stranger_key = dir.join("stranger_key");
        for k in [&host_key, &other_host_key, &deploy_key, &stranger_key] {
            keygen(k);
        }
        std::fs::write(dir.join("authorized_keys"), public_key(&deploy_key) + "\n").unwrap();
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .expect("the current user has a name");
        let port = super::free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host}\n\
                 PidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {dir}/authorized_keys\n\
                 AuthenticationMethods publickey\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 AllowUsers {user}\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 LogLevel VERBOSE\n",
                host = host_key.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("sshd starts");
        let name = format!("[127.0.0.1]:{port}");
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("{name} {}\n", public_key(&host_key))).unwrap();
        let known_hosts_changed = dir.join("known_hosts_changed");
        std::fs::write(
            &known_hosts_changed,
            format!("{name} {}\n", public_key(&other_host_key)),
        )
        .unwrap();
        let mut sshd = Sshd {
            port,
            user,
            deploy_key,
            stranger_key,
            known_hosts,
            known_hosts_changed,
            dir: dir.to_path_buf(),
            child,
        };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                panic!("sshd exited with {status}: {}", sshd.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "sshd does not listen: {}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    /// `ssh://USER@127.0.0.1:PORT/<absolute path>`.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
