//! Which nodes a certificate names: the identity that mutual TLS binds on the P2P
//! port and on the control plane.

use rustls_pki_types::CertificateDer;

/// The node identities a certificate names: its DNS SANs and the ids of its
/// `eliop2p://node/<id>` URI SANs (IP SANs are not identities). An unparsable
/// certificate names none.
pub fn node_ids(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = ee.valid_dns_names().map(str::to_owned).collect();
    ids.extend(
        ee.valid_uri_names()
            .filter_map(|u| u.strip_prefix("eliop2p://node/"))
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
    );
    ids
}

#[cfg(test)]
mod tests {
    #[test]
    fn garbage_names_no_node() {
        let der = rustls_pki_types::CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(super::node_ids(&der).is_empty());
    }
}
