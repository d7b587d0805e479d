//! Certificates for the TLS tests, made fresh by each test (rcgen) and written as PEM
//! files: a CA, an agent certificate for `127.0.0.1` and `localhost` signed by it, a
//! client certificate signed by it, and a second CA that signed nothing the agent trusts.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// PEM files in a temporary directory, removed when dropped.
#[derive(Debug)]
pub struct Pki {
    dir: tempfile::TempDir,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM");
    path
}

/// Writes `<name>.pem` and `<name>-key.pem`: a certificate for `sans` signed by `issuer`.
fn leaf(dir: &Path, issuer: &CertifiedIssuer<'static, KeyPair>, name: &str, sans: &[&str]) {
    let key = KeyPair::generate().expect("key");
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, issuer).expect("sign");
    write(dir, &format!("{name}.pem"), &cert.pem());
    write(dir, &format!("{name}-key.pem"), &key.serialize_pem());
}

impl Pki {
    /// Generates the CA, the agent and client certificates, the other CA and the client
    /// certificate it signed.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = new_ca("strata test CA");
        write(dir.path(), "ca.pem", &ca.pem());
        leaf(dir.path(), &ca, "agent", &["127.0.0.1", "localhost"]);
        leaf(dir.path(), &ca, "client", &["strata-test-client"]);
        let other = new_ca("another CA");
        write(dir.path(), "other-ca.pem", &other.pem());
        leaf(dir.path(), &other, "stranger", &["strata-test-stranger"]);
        Self { dir }
    }

    /// The CA that signed the agent and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that signed neither.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// The agent's certificate (for 127.0.0.1 and localhost).
    pub fn agent(&self) -> CertFiles {
        self.files("agent")
    }

    /// A client certificate signed by [`Pki::ca`].
    pub fn client(&self) -> CertFiles {
        self.files("client")
    }

    /// A client certificate signed by [`Pki::other_ca`].
    pub fn stranger(&self) -> CertFiles {
        self.files("stranger")
    }

    fn files(&self, name: &str) -> CertFiles {
        CertFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}-key.pem")),
        }
    }

    /// A file in the directory, for the test's own use (a tokens file).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
