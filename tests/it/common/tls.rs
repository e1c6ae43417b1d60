//! Certificates made at test time (rcgen): a CA, server certificates for `127.0.0.1` and
//! `localhost` with chosen serial numbers, client certificates, written as PEM files into a
//! temp folder; and HTTPS clients that trust that CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber,
};

/// A certificate authority and the files it signed.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// `ca.pem`: what clients trust.
    pub ca_pem: PathBuf,
}

/// A certificate and its key, as files and as DER (to compare with what a server presents).
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
            .expect("CA certificate");
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).expect("write ca.pem");
        Pki { dir, ca, ca_pem }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A server certificate for 127.0.0.1 and localhost with `serial`, written as
    /// `<name>.pem` and `<name>-key.pem`.
    pub fn server(&self, name: &str, serial: u64) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        self.sign(name, params)
    }

    /// A client certificate for `cn`.
    pub fn client(&self, name: &str, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(name, params)
    }

    fn sign(&self, name: &str, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let leaf = Leaf {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}-key.pem")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }
}

/// Replaces `to`'s contents with `from`'s the way a renewal tool does: a new file renamed
/// over the old one, so a reader never sees half a file.
pub fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

/// An HTTPS client trusting only `ca` (HTTP/1.1 or h2 by ALPN), reporting the server's
/// certificate (`TlsInfo`).
pub fn https_client(ca: &Path) -> reqwest::Client {
    https_builder(ca).build().expect("client")
}

pub fn https_builder(ca: &Path) -> reqwest::ClientBuilder {
    let pem = std::fs::read(ca).expect("read CA");
    let cert = reqwest::Certificate::from_pem(&pem).expect("CA certificate");
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .tls_info(true)
        .timeout(std::time::Duration::from_secs(30))
}

/// The DER of the certificate the server presented for `response`.
pub fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("TLS info with the peer certificate")
}
