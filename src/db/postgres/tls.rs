//! TLS to PostgreSQL with rustls.

/// How to use TLS to PostgreSQL, from the URL's `sslmode` as libpq reads it:
/// `disable` no TLS; `prefer` (the default) and `require` encrypt without
/// checking the server's certificate (as libpq does); `verify-ca` and
/// `verify-full` check it against the Mozilla roots, or against the CA file
/// given as `sslrootcert`, and the host name.
#[derive(Debug, Default)]
pub(super) struct TlsMode {
    verify: bool,
    root_cert: Option<std::path::PathBuf>,
}

/// The URL tokio-postgres understands (it knows `disable|prefer|require`
/// only), and the TLS mode.
pub(super) fn split_tls(url: &str) -> anyhow::Result<(String, TlsMode)> {
    let Ok(mut u) = url::Url::parse(url) else {
        return Ok((url.to_string(), TlsMode::default()));
    };
    let mut mode = TlsMode::default();
    let mut kept = Vec::new();
    for (k, v) in u.query_pairs() {
        match (k.as_ref(), v.as_ref()) {
            ("sslmode", "verify-ca" | "verify-full") => {
                mode.verify = true;
                kept.push(("sslmode".to_string(), "require".to_string()));
            }
            ("sslrootcert", path) => mode.root_cert = Some(path.into()),
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    if kept.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((u.to_string(), mode))
}

pub(super) fn connector(
    mode: &TlsMode,
) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = if mode.verify {
        let mut roots = rustls::RootCertStore::empty();
        match &mode.root_cert {
            Some(path) => {
                use rustls::pki_types::{CertificateDer, pem::PemObject};
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| anyhow::anyhow!("sslrootcert {}: {e}", path.display()))?
                {
                    roots.add(
                        cert.map_err(|e| anyhow::anyhow!("sslrootcert {}: {e}", path.display()))?,
                    )?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(EncryptOnly(provider)))
            .with_no_client_auth()
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `sslmode=prefer|require`: the handshake is checked, the certificate is not
/// (libpq's meaning of those modes; use `verify-full` to check it).
#[derive(Debug)]
struct EncryptOnly(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_as_libpq_reads_it() {
        let (url, m) = split_tls(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
        )
        .expect("ok");
        assert!(m.verify);
        assert_eq!(
            m.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(url, "postgres://u@h/db?sslmode=require&application_name=x");
        let (url, m) = split_tls("postgres://u@h/db?sslmode=require").expect("ok");
        assert!(!m.verify);
        assert_eq!(url, "postgres://u@h/db?sslmode=require");
        let (url, m) = split_tls("postgres://u@h/db").expect("ok");
        assert!(!m.verify && m.root_cert.is_none());
        assert_eq!(url, "postgres://u@h/db");
    }
}
