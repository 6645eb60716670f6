use super::*;
use crate::keys::Role;
use crate::trust::{KeyEntry, Revocation, TrustFile};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

// RFC 9421 appendix B.1.4 (test-key-ed25519) and B.2.6.
const RFC_X: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";
const RFC_D: &str = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU";
const RFC_INPUT: &str = r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;
const RFC_SIGNATURE: &str =
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";
const RFC_BASE: &str = r#""date": Tue, 20 Apr 2021 02:07:55 GMT
"@method": POST
"@path": /foo
"@authority": example.com
"content-type": application/json
"content-length": 18
"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, value.parse().unwrap());
    }
    map
}

#[test]
fn the_signature_base_and_signature_of_rfc_9421_b_2_6() {
    let headers = headers(&[
        ("host", "example.com"),
        ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
        ("content-type", "application/json"),
        ("content-length", "18"),
    ]);
    let message =
        Message { method: "POST", target_uri: "https://example.com/foo?param=Value&Pet=dog", headers: &headers };
    let input = parse_input(RFC_INPUT).unwrap();
    assert_eq!(input.label, "sig-b26");
    let base = signature_base(&message, &input).unwrap();
    assert_eq!(base, RFC_BASE);
    let public: [u8; 32] = URL_SAFE_NO_PAD.decode(RFC_X).unwrap().try_into().unwrap();
    let public = ed25519_dalek::VerifyingKey::from_bytes(&public).unwrap();
    let signature = parse_signature(RFC_SIGNATURE, "sig-b26").unwrap();
    public.verify_strict(base.as_bytes(), &signature).unwrap();
    // Ed25519 is deterministic: the RFC's private key signs the same bytes.
    let secret: [u8; 32] = URL_SAFE_NO_PAD.decode(RFC_D).unwrap().try_into().unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&secret);
    assert_eq!(signing.sign(base.as_bytes()), signature);
    // The same signature over another path does not verify.
    let moved = Message { target_uri: "https://example.com/bar", ..message };
    let other = signature_base(&moved, &input).unwrap();
    assert!(public.verify_strict(other.as_bytes(), &signature).is_err());
}

struct Fixture {
    agent: PrivateKey,
    trust: TrustStore,
    nonces: Nonces,
}

const URI: &str = "http://127.0.0.1:7000/v1/jobs?state=submitted";

fn fixture() -> Fixture {
    let agent = PrivateKey::from_seed("agent", Role::Agent, [41; 32]);
    let revoked = PrivateKey::from_seed("gone", Role::Agent, [42; 32]);
    let old = PrivateKey::from_seed("old", Role::Agent, [43; 32]);
    let runner = PrivateKey::from_seed("runner", Role::Runner, [45; 32]);
    let entry = |key: &PrivateKey, not_after: &str| KeyEntry::new(&key.public(), vec!["dev".into()], not_after.into());
    let trust = TrustStore::from_file(TrustFile {
        keys: vec![
            entry(&agent, "2099-01-01T00:00:00Z"),
            entry(&revoked, "2099-01-01T00:00:00Z"),
            entry(&old, "2001-01-01T00:00:00Z"),
            entry(&runner, "2099-01-01T00:00:00Z"),
        ],
        revoked: vec![Revocation { id: revoked.id.clone(), reason: "left the team".into() }],
        ..TrustFile::default()
    })
    .unwrap();
    Fixture { agent, trust, nonces: Nonces::default() }
}

fn signed(key: &PrivateKey, method: &str, uri: &str, body: &[u8], at: SystemTime) -> HeaderMap {
    let mut map = headers(&[("host", "127.0.0.1:7000")]);
    for (name, value) in sign(method, uri, body, key, at).unwrap() {
        map.insert(name, value.parse().unwrap());
    }
    map
}

impl Fixture {
    fn check(&self, method: &str, uri: &str, headers: &HeaderMap, body: &[u8]) -> Result<String, SignatureError> {
        let message = Message { method, target_uri: uri, headers };
        verify(&message, body, &self.trust, &self.nonces, &[Role::Agent], SystemTime::now())
            .map(|k| k.entry.name.clone())
    }
}

#[test]
fn a_signed_request_verifies_once() {
    let f = fixture();
    let now = SystemTime::now();
    let headers = signed(&f.agent, "GET", URI, b"", now);
    assert_eq!(f.check("GET", URI, &headers, b"").unwrap(), "agent");
    assert_eq!(f.check("GET", URI, &headers, b""), Err(SignatureError::Replayed { id: f.agent.id.clone() }));
    // Another nonce, the same request: fine.
    let again = signed(&f.agent, "GET", URI, b"", now);
    assert!(f.check("GET", URI, &again, b"").is_ok());
}

#[track_caller]
fn code(result: Result<String, SignatureError>) -> &'static str {
    result.unwrap_err().code()
}

#[test]
fn every_way_around_the_signature_is_refused() {
    let f = fixture();
    let now = SystemTime::now();
    let body = br#"{"a":1}"#;

    assert_eq!(code(f.check("GET", URI, &headers(&[]), b"")), "signature-missing");
    let good = signed(&f.agent, "POST", URI, body, now);
    assert_eq!(code(f.check("POST", URI, &good, br#"{"a":2}"#)), "content-digest-mismatch");
    assert_eq!(code(f.check("PUT", URI, &good, body)), "signature-invalid");
    assert_eq!(code(f.check("POST", "http://127.0.0.1:7000/v1/jobs", &good, body)), "signature-invalid");

    let stale = signed(&f.agent, "GET", URI, b"", now - MAX_AGE - Duration::from_secs(5));
    assert_eq!(code(f.check("GET", URI, &stale, b"")), "signature-stale");
    let ahead = signed(&f.agent, "GET", URI, b"", now + MAX_SKEW + Duration::from_secs(60));
    assert_eq!(code(f.check("GET", URI, &ahead, b"")), "signature-future");

    let stranger = PrivateKey::from_seed("stranger", Role::Agent, [44; 32]);
    assert_eq!(code(f.check("GET", URI, &signed(&stranger, "GET", URI, b"", now), b"")), "key-unknown");
    let gone = PrivateKey::from_seed("gone", Role::Agent, [42; 32]);
    assert_eq!(code(f.check("GET", URI, &signed(&gone, "GET", URI, b"", now), b"")), "key-revoked");
    let old = PrivateKey::from_seed("old", Role::Agent, [43; 32]);
    assert_eq!(code(f.check("GET", URI, &signed(&old, "GET", URI, b"", now), b"")), "key-expired");

    // A key that signs a base naming another key's id: it does not verify.
    let forged = {
        let value = format!(
            "salve=(\"@method\" \"@target-uri\" \"content-digest\");created={};nonce=\"forged-nonce-0123456789\";keyid=\"{}\"",
            unix(now),
            f.agent.id
        );
        let mut h = headers(&[("host", "127.0.0.1:7000"), ("content-digest", &content_digest(b""))]);
        let base =
            signature_base(&Message { method: "GET", target_uri: URI, headers: &h }, &parse_input(&value).unwrap())
                .unwrap();
        let signature = STANDARD.encode(stranger.signing.sign(base.as_bytes()).to_bytes());
        h.insert("signature-input", value.parse().unwrap());
        h.insert("signature", format!("salve=:{signature}:").parse().unwrap());
        h
    };
    assert_eq!(code(f.check("GET", URI, &forged, b"")), "signature-invalid");
    // Nor is a revoked or expired key named as such to whoever does not
    // hold it.
    let mut claims_gone = forged.clone();
    let input = claims_gone["signature-input"].to_str().unwrap().replace(&f.agent.id, &gone.id);
    claims_gone.insert("signature-input", input.parse().unwrap());
    assert_eq!(code(f.check("GET", URI, &claims_gone, b"")), "signature-invalid");
    // A trusted key of a role the request does not take: refused before
    // its nonce takes room.
    let runner = PrivateKey::from_seed("runner", Role::Runner, [45; 32]);
    let by_runner = signed(&runner, "GET", URI, b"", now);
    assert_eq!(code(f.check("GET", URI, &by_runner, b"")), "role");
    assert_eq!(code(f.check("GET", URI, &by_runner, b"")), "role", "not recorded as a replay");

    // Covering less than the profile asks: the RFC's own example.
    let rfc = headers(&[("signature-input", RFC_INPUT), ("signature", RFC_SIGNATURE)]);
    assert_eq!(code(f.check("POST", URI, &rfc, b"")), "signature-uncovered");

    // Two signatures, a missing nonce, a short one, another algorithm, a
    // component salve does not know, a header sent twice.
    let edit = |from: &str, to: &str| {
        let mut h = signed(&f.agent, "GET", URI, b"", now);
        let input = h["signature-input"].to_str().unwrap().replacen(from, to, 1);
        h.insert("signature-input", input.parse().unwrap());
        h
    };
    let two = {
        let mut h = signed(&f.agent, "GET", URI, b"", now);
        let input = h["signature-input"].to_str().unwrap().to_string();
        h.insert("signature-input", format!("{input}, {}", input.replacen("salve=", "other=", 1)).parse().unwrap());
        h
    };
    assert_eq!(code(f.check("GET", URI, &two, b"")), "signature-malformed");
    let no_nonce = {
        let mut h = signed(&f.agent, "GET", URI, b"", now);
        let input = h["signature-input"].to_str().unwrap().to_string();
        let start = input.find(";nonce=").unwrap();
        let end = start + 1 + input[start + 1..].find(';').unwrap();
        h.insert("signature-input", format!("{}{}", &input[..start], &input[end..]).parse().unwrap());
        h
    };
    assert_eq!(code(f.check("GET", URI, &no_nonce, b"")), "signature-param-missing");
    assert_eq!(code(f.check("GET", URI, &edit(";nonce=\"", ";nonce=\"x\";n=\""), b"")), "signature-unsupported");
    let short = {
        let mut h = signed(&f.agent, "GET", URI, b"", now);
        let input = h["signature-input"].to_str().unwrap().to_string();
        let start = input.find(";nonce=\"").unwrap() + ";nonce=\"".len();
        let end = start + input[start..].find('"').unwrap();
        h.insert("signature-input", format!("{}short{}", &input[..start], &input[end..]).parse().unwrap());
        h
    };
    assert_eq!(code(f.check("GET", URI, &short, b"")), "signature-malformed");
    assert_eq!(
        code(f.check("GET", URI, &edit("alg=\"ed25519\"", "alg=\"rsa-pss-sha512\""), b"")),
        "signature-unsupported"
    );
    assert_eq!(
        code(f.check("GET", URI, &edit("\"@method\"", "\"@method\" \"@request-response\""), b"")),
        "signature-unsupported"
    );
    let mut twice = signed(&f.agent, "GET", URI, b"", now);
    twice.append("signature", "salve=:AAAA:".parse().unwrap());
    assert_eq!(code(f.check("GET", URI, &twice, b"")), "signature-malformed");
}

#[test]
fn one_key_cannot_fill_the_nonce_cache_for_the_others() {
    let mut f = fixture();
    f.nonces = Nonces::with_limits(5, 3);
    let second = PrivateKey::from_seed("second", Role::Agent, [46; 32]);
    let third = PrivateKey::from_seed("third", Role::Agent, [47; 32]);
    let mut file = TrustFile::default();
    for key in [&f.agent, &second, &third] {
        file.keys.push(KeyEntry::new(&key.public(), vec!["dev".into()], "2099-01-01T00:00:00Z".into()));
    }
    f.trust = TrustStore::from_file(file).unwrap();
    let now = SystemTime::now();
    for _ in 0..3 {
        assert!(f.check("GET", URI, &signed(&f.agent, "GET", URI, b"", now), b"").is_ok());
    }
    // The busy key is refused past its share, and told to wait.
    let refused = f.check("GET", URI, &signed(&f.agent, "GET", URI, b"", now), b"").unwrap_err();
    assert_eq!(refused, SignatureError::KeyBusy { id: f.agent.id.clone(), per_key: 3 });
    let answer = crate::serve::error::ApiError::from(refused);
    assert_eq!((answer.status.as_u16(), answer.check, answer.retry_after), (429, "nonces-per-key", Some(60)));
    // Another key is still served, up to the cache's whole size.
    for _ in 0..2 {
        assert!(f.check("GET", URI, &signed(&second, "GET", URI, b"", now), b"").is_ok());
    }
    assert_eq!(code(f.check("GET", URI, &signed(&third, "GET", URI, b"", now), b"")), "nonces-full");
    // Once the signatures could no longer be fresh, the nonces are forgotten.
    let later = now + MAX_AGE + MAX_SKEW + Duration::from_secs(20);
    let message_headers = signed(&f.agent, "GET", URI, b"", later);
    let message = Message { method: "GET", target_uri: URI, headers: &message_headers };
    assert!(verify(&message, b"", &f.trust, &f.nonces, &[Role::Agent], later).is_ok());
}
