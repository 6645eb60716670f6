use super::*;

// golang.org/x/mod/sumdb/note note_test.go (and the package documentation): the PeterNeumann and EnochRoot keys.
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG: &str = concat!(
    "\u{2014} PeterNeumann ",
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
);
const ENOCH_SIG: &str = concat!(
    "\u{2014} EnochRoot ",
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
);

/// Decodes Go's `PRIVATE+KEY+name+keyid+base64(0x01 || seed)` form (test-only).
fn signing_key_from_skey(skey: &str) -> (String, SigningKey) {
    let parts: Vec<&str> = skey.splitn(5, '+').collect();
    assert_eq!(&parts[..2], ["PRIVATE", "KEY"]);
    let key = STANDARD.decode(parts[4]).unwrap();
    assert_eq!(key[0], ALG_ED25519);
    let signing = SigningKey::from_bytes(&key[1..].try_into().unwrap());
    assert_eq!(format!("{:08x}", key_id(parts[2], &signing.verifying_key())), parts[3]);
    (parts[2].to_owned(), signing)
}

fn peter() -> Verifier {
    Verifier::from_vkey(PETER_VKEY).unwrap()
}

fn enoch() -> Verifier {
    Verifier::from_vkey(ENOCH_VKEY).unwrap()
}

fn test_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn runner_checkpoint() -> Checkpoint {
    Checkpoint::new("salve.example/runner-1", 20_852_163, crate::audit::merkle::leaf_hash(b"root"))
}

#[test]
fn go_known_answer_sign_and_open() {
    let (name, key) = signing_key_from_skey(PETER_SKEY);
    assert_eq!(name, "PeterNeumann");
    assert_eq!(key_id(&name, &key.verifying_key()), 0xc74f20a3);
    assert_eq!(Verifier::new(&name, key.verifying_key()).unwrap().to_vkey(), PETER_VKEY);
    // Ed25519 is deterministic: the signature is Go's, byte for byte.
    let note = SignedNote::sign(TEXT, &key, &name).unwrap().encode();
    assert_eq!(note, format!("{TEXT}\n{PETER_SIG}"));
    let parsed = SignedNote::parse(note.as_bytes()).unwrap();
    assert_eq!(parsed.text(), TEXT);
    assert_eq!(parsed.encode(), note);
    let v = parsed.verify(&[peter()]).unwrap();
    assert_eq!(v.verified, [SignerId { name: "PeterNeumann".into(), key_id: 0xc74f20a3 }]);
    assert!(v.unknown.is_empty());
    // Re-signing replaces the signature by the same key rather than adding a second.
    let mut resigned = parsed.clone();
    resigned.add_signature(&key, &name).unwrap();
    assert_eq!(resigned.encode(), note);
}

#[test]
fn go_open_semantics() {
    let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let note = SignedNote::parse(both.as_bytes()).unwrap();
    let enoch_id = SignerId { name: "EnochRoot".into(), key_id: 0xaf0cfe78 };
    let peter_id = SignerId { name: "PeterNeumann".into(), key_id: 0xc74f20a3 };
    // One known, one unknown: the unknown is ignored.
    let v = note.verify(&[peter()]).unwrap();
    assert_eq!((v.verified, v.unknown), (vec![peter_id.clone()], vec![enoch_id.clone()]));
    // Both known.
    let v = note.verify(&[peter(), enoch()]).unwrap();
    assert_eq!(v.verified, [peter_id.clone(), enoch_id]);
    // None known.
    assert_eq!(note.verify(&[]), Err(CheckpointError::NoVerifiedSignature { signatures: 2 }));
    // Duplicated identical trusted keys are fine; two different keys with one name and ID are not.
    note.verify(&[enoch(), peter(), enoch()]).unwrap();
    let impostor = Verifier { key: test_key(9).verifying_key(), ..enoch() };
    assert!(matches!(note.verify(&[enoch(), impostor]), Err(CheckpointError::AmbiguousKey { .. })));
    // A corrupted signature by a known key refuses the note (Go's "ABCD" insertion).
    let bad = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    assert_eq!(
        SignedNote::parse(bad.as_bytes()).unwrap().verify(&[peter()]),
        Err(CheckpointError::InvalidSignature { name: "PeterNeumann".into(), key_id: 0xc74f20a3 })
    );
    // ... but the same corruption on an unknown key's signature is ignored.
    let bad_enoch = format!("{TEXT}\n{PETER_SIG}{}ABCD{}", &ENOCH_SIG[..60], &ENOCH_SIG[60..]);
    SignedNote::parse(bad_enoch.as_bytes()).unwrap().verify(&[peter()]).unwrap();
    // Repeated signatures are reported once.
    let repeated = format!("{TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}{ENOCH_SIG}");
    let v = SignedNote::parse(repeated.as_bytes()).unwrap().verify(&[peter()]).unwrap();
    assert_eq!((v.verified.len(), v.unknown.len()), (1, 1));
    // A changed text fails against a known key.
    let changed = format!("{}\n{PETER_SIG}", TEXT.replace("cryptography", "cryptographY"));
    assert!(matches!(
        SignedNote::parse(changed.as_bytes()).unwrap().verify(&[peter()]),
        Err(CheckpointError::InvalidSignature { .. })
    ));
    // Same name, another key ID (or the reverse): an unknown key, ignored; so nothing verifies.
    let other_name = PETER_SIG.replace("PeterNeumann", "CarmenSandiego");
    let note = SignedNote::parse(format!("{TEXT}\n{other_name}").as_bytes()).unwrap();
    assert!(matches!(note.verify(&[peter()]), Err(CheckpointError::NoVerifiedSignature { .. })));
    let other_id = PETER_SIG.replace("x08g", "xxxx");
    let note = SignedNote::parse(format!("{TEXT}\n{other_id}").as_bytes()).unwrap();
    assert!(matches!(note.verify(&[peter()]), Err(CheckpointError::NoVerifiedSignature { .. })));
}

#[test]
fn go_malformed_notes_are_refused() {
    let bad: Vec<(String, CheckpointError)> = vec![
        (TEXT.to_owned(), CheckpointError::MissingBlankLine),
        (format!("{TEXT}\n"), CheckpointError::NoSignatures),
        (format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]), CheckpointError::MissingFinalNewline),
        (format!("\x01{TEXT}\n{PETER_SIG}"), CheckpointError::ControlCharacter { offset: 0, byte: 1 }),
        (
            format!(
                "{TEXT}\n\u{2014} Bad Name {}\n",
                "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
            ),
            CheckpointError::InvalidBase64 { field: "signature" },
        ),
        (format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"), CheckpointError::SignatureLinePrefix { index: 2 }),
    ];
    for (note, want) in bad {
        assert_eq!(SignedNote::parse(note.as_bytes()), Err(want), "{note:?}");
    }
    let mut invalid_utf8 = format!("{TEXT}\n{PETER_SIG}").into_bytes();
    invalid_utf8.insert(0, 0xff);
    assert_eq!(SignedNote::parse(&invalid_utf8), Err(CheckpointError::InvalidUtf8 { valid_up_to: 0 }));
    // 101 signatures: too many, whether or not they are by known keys.
    let many = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1));
    assert_eq!(SignedNote::parse(many.as_bytes()), Err(CheckpointError::TooManySignatures { max: MAX_SIGNATURES }));
    let hundred = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES));
    SignedNote::parse(hundred.as_bytes()).unwrap().verify(&[peter()]).unwrap();
}

#[test]
fn go_vkey_manglings_are_refused() {
    let bytes = PETER_VKEY.as_bytes();
    for i in 0..=bytes.len() {
        for j in i + 1..=bytes.len() {
            if (i, j) != (0, bytes.len()) {
                let part = &PETER_VKEY[i..j];
                assert!(Verifier::from_vkey(part).is_err(), "{part:?} accepted");
            }
        }
    }
    for i in 0..bytes.len() {
        let mut changed = bytes.to_vec();
        changed[i] += 1;
        let changed = String::from_utf8(changed).unwrap();
        assert!(Verifier::from_vkey(&changed).is_err(), "{changed:?} accepted");
    }
    // Wrong-length key and unknown algorithm, each with a key ID adjusted to match (from Go's test). The first is
    // also non-canonical base64 (non-zero trailing bits, which Go's decoder tolerates), refused as such here.
    assert_eq!(
        Verifier::from_vkey("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="),
        Err(CheckpointError::InvalidBase64 { field: "verifier key" })
    );
    let long_key = STANDARD.encode([&[ALG_ED25519][..], peter().key().as_bytes(), b"x"].concat());
    let digest =
        Sha256::new().chain_update("PeterNeumann\n").chain_update(STANDARD.decode(&long_key).unwrap()).finalize();
    assert_eq!(
        Verifier::from_vkey(&format!("PeterNeumann+{}+{long_key}", crate::audit::merkle::hex(&digest[..4]))),
        Err(CheckpointError::KeyLength { len: 33, expected: 32 })
    );
    assert_eq!(
        Verifier::from_vkey("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(CheckpointError::UnsupportedAlgorithm { alg: 0x65 })
    );
    // Uppercase key ID hex is not what any implementation writes.
    assert!(matches!(
        Verifier::from_vkey(&PETER_VKEY.replace("c74f20a3", "C74F20A3")),
        Err(CheckpointError::MalformedVkey { .. })
    ));
    // A wrong key ID.
    assert!(matches!(
        Verifier::from_vkey(&PETER_VKEY.replace("c74f20a3", "c74f20a4")),
        Err(CheckpointError::KeyIdMismatch { .. })
    ));
}

#[test]
fn vkey_refuses_weak_and_non_canonical_keys() {
    let vkey_for = |material: [u8; 32]| {
        let (pk, name) = ([&[ALG_ED25519][..], &material].concat(), "weak");
        let digest = Sha256::new().chain_update(name).chain_update(b"\n").chain_update(&pk).finalize();
        format!("{name}+{}+{}", crate::audit::merkle::hex(&digest[..4]), STANDARD.encode(pk))
    };
    // The identity point (small order).
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(matches!(Verifier::from_vkey(&vkey_for(identity)), Err(CheckpointError::InvalidPublicKey { .. })));
    // y = p + 1, a non-canonical encoding of y = 1.
    let mut non_canonical = [0xffu8; 32];
    non_canonical[0] = 0xee;
    non_canonical[31] = 0x7f;
    assert!(matches!(Verifier::from_vkey(&vkey_for(non_canonical)), Err(CheckpointError::InvalidPublicKey { .. })));
    // A large-order point with a small y (< 19) also has the non-canonical encoding y + p.
    let mut found = 0;
    for y in 2u8..19 {
        let mut canonical = [0u8; 32];
        canonical[0] = y;
        let Ok(point) = VerifyingKey::from_bytes(&canonical) else { continue };
        if point.is_weak() {
            continue;
        }
        Verifier::from_vkey(&vkey_for(canonical)).unwrap();
        let mut alias = [0xffu8; 32];
        alias[0] = 0xed + y;
        alias[31] = 0x7f;
        if VerifyingKey::from_bytes(&alias).is_ok() {
            assert_eq!(
                Verifier::from_vkey(&vkey_for(alias)),
                Err(CheckpointError::InvalidPublicKey { reason: "non-canonical encoding" })
            );
            found += 1;
        }
    }
    println!("non-canonical encodings of large-order keys refused: {found}");
}

#[test]
fn go_tlog_tree_body_known_answer() {
    // golang.org/x/mod/sumdb/tlog note_test.go TestFormatTree: the root is RecordHash("hello world"), which is
    // this crate's leaf hash.
    let golden = "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n";
    let checkpoint =
        Checkpoint::new("go.sum database tree", 123_456_789_012, crate::audit::merkle::leaf_hash(b"hello world"));
    assert_eq!(checkpoint.body().unwrap(), golden);
    assert_eq!(Checkpoint::from_body(golden).unwrap(), checkpoint);
    assert!(
        Checkpoint::from_body("go.sum database tree\n0xabcdef\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n")
            .is_err()
    );
    assert!(
        Checkpoint::from_body("go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBTOOBIG=\n")
            .is_err()
    );
    // C2SP tlog-checkpoint's example body parses.
    let c2sp =
        Checkpoint::from_body("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
            .unwrap();
    assert_eq!((c2sp.origin.as_str(), c2sp.size), ("example.com/behind-the-sofa", 20_852_163));
}

#[test]
fn checkpoint_round_trips() {
    let key = test_key(7);
    let verifier = Verifier::new("salve.example/runner-1", key.verifying_key()).unwrap();
    let mut checkpoint = runner_checkpoint();
    for extensions in [vec![], vec!["ext one".to_owned(), "— ext two".to_owned()]] {
        checkpoint.extensions = extensions;
        let note = checkpoint.sign(&key, "salve.example/runner-1").unwrap();
        assert!(note.starts_with(&checkpoint.body().unwrap()));
        let (opened, v) =
            Checkpoint::open(note.as_bytes(), "salve.example/runner-1", std::slice::from_ref(&verifier)).unwrap();
        assert_eq!(opened, checkpoint);
        assert_eq!(v.verified.len(), 1);
        let (unverified, parsed) = Checkpoint::parse_unverified(note.as_bytes()).unwrap();
        assert_eq!((unverified, parsed.encode()), (checkpoint.clone(), note));
    }
    // Sizes at the ends of the range.
    for size in [0, 1, u64::MAX] {
        let c = Checkpoint { size, ..runner_checkpoint() };
        assert_eq!(Checkpoint::from_body(&c.body().unwrap()).unwrap(), c);
    }
    // vkey round trip.
    let vkey = verifier.to_vkey();
    assert_eq!(Verifier::from_vkey(&vkey).unwrap(), verifier);
    // A witness cosignature is added after the runner's; both verify, and the runner alone still does.
    let note = runner_checkpoint().sign(&key, "salve.example/runner-1").unwrap();
    let mut cosigned = SignedNote::parse(note.as_bytes()).unwrap();
    let witness_key = test_key(8);
    cosigned.add_signature(&witness_key, "witness.example").unwrap();
    let witness = Verifier::new("witness.example", witness_key.verifying_key()).unwrap();
    let encoded = cosigned.encode();
    let (_, v) = Checkpoint::open(encoded.as_bytes(), "salve.example/runner-1", &[verifier.clone(), witness]).unwrap();
    assert_eq!(v.verified.len(), 2);
    let (_, v) = Checkpoint::open(encoded.as_bytes(), "salve.example/runner-1", &[verifier]).unwrap();
    assert_eq!((v.verified.len(), v.unknown.len()), (1, 1));
}

#[test]
fn checkpoint_refusals() {
    let key = test_key(7);
    let name = "salve.example/runner-1";
    let verifier = Verifier::new(name, key.verifying_key()).unwrap();
    let good = runner_checkpoint().sign(&key, name).unwrap();
    let open = |note: &str| Checkpoint::open(note.as_bytes(), name, std::slice::from_ref(&verifier)).map(|(c, _)| c);
    open(&good).unwrap();
    let root_b64 = STANDARD.encode(runner_checkpoint().root);
    let sig_line = &good[good.rfind("\n\n").unwrap() + 2..];
    let with_body = |body: &str| format!("{body}\n{sig_line}");

    // The wrong origin, another runner's key, a changed body.
    assert!(matches!(
        Checkpoint::open(good.as_bytes(), "salve.example/runner-2", std::slice::from_ref(&verifier)),
        Err(CheckpointError::OriginMismatch { .. })
    ));
    let other = Verifier::new(name, test_key(1).verifying_key()).unwrap();
    assert!(matches!(
        Checkpoint::open(good.as_bytes(), name, &[other]),
        Err(CheckpointError::NoVerifiedSignature { .. })
    ));
    assert!(matches!(open(&good.replace("20852163", "20852164")), Err(CheckpointError::InvalidSignature { .. })));
    // Structure.
    assert_eq!(open(&good.replace("\n\n", "\n")), Err(CheckpointError::MissingBlankLine));
    assert_eq!(open(&good[..good.len() - 1]), Err(CheckpointError::MissingFinalNewline));
    assert_eq!(open(&good.replace('\n', "\r\n")), Err(CheckpointError::ControlCharacter { offset: 22, byte: b'\r' }));
    assert!(matches!(open(&good.replace("runner-1\n", "runner-1\t\n")), Err(CheckpointError::ControlCharacter { .. })));
    assert!(matches!(open(&good.replace("runner-1\n", "runner-1\0\n")), Err(CheckpointError::ControlCharacter { .. })));
    assert_eq!(open(&good.replace("\u{2014} ", "- ")), Err(CheckpointError::SignatureLinePrefix { index: 1 }));
    assert_eq!(open(&good.replace("\u{2014} ", "\u{2014}")), Err(CheckpointError::SignatureLinePrefix { index: 1 }));
    assert_eq!(
        open(&good.replace(sig_line, "\u{2014} nameonly\n")),
        Err(CheckpointError::MissingSignature { index: 1 })
    );
    // Body lines: empty origin, too few lines, an empty extension (a blank line inside the body).
    assert_eq!(open(&with_body(&format!("\n20852163\n{root_b64}\n"))), Err(CheckpointError::EmptyLine { line: 1 }));
    assert_eq!(Checkpoint::from_body(&format!("{name}\n{root_b64}\n")), Err(CheckpointError::TooFewLines { lines: 2 }));
    assert_eq!(
        Checkpoint::from_body(&format!("{name}\n1\n{root_b64}\n\next\n")),
        Err(CheckpointError::EmptyLine { line: 4 })
    );
    assert!(matches!(
        Checkpoint::from_body(&format!("{name}\n1\n{root_b64}\n{}", "x\n".repeat(MAX_EXTENSION_LINES + 1))),
        Err(CheckpointError::TooManyExtensions { .. })
    ));
    // Sizes: leading zeros, signs, spaces, hex, overflow, empty.
    for size in ["012", "00", "+12", "-1", " 12", "12 ", "0x12", "18446744073709551616", "1_000", "１２"] {
        assert!(
            matches!(
                Checkpoint::from_body(&format!("{name}\n{size}\n{root_b64}\n")),
                Err(CheckpointError::InvalidTreeSize { .. })
            ),
            "size {size:?} accepted"
        );
    }
    assert_eq!(Checkpoint::from_body(&format!("{name}\n0\n{root_b64}\n")).unwrap().size, 0);
    // Root hashes: non-canonical base64 (trailing bits, missing padding, URL alphabet, spaces), wrong length.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut trailing_bits = root_b64.clone().into_bytes();
    // 32 bytes are 43 characters and '=': the 43rd carries 4 bits of data and 2 that must be zero.
    let value = ALPHABET.iter().position(|&c| c == trailing_bits[42]).unwrap();
    trailing_bits[42] = ALPHABET[value ^ 1];
    let trailing_bits = String::from_utf8(trailing_bits).unwrap();
    for root in [
        trailing_bits,
        root_b64.trim_end_matches('=').to_owned(),
        format!("{root_b64}="),
        format!(" {root_b64}"),
        format!("{root_b64}\u{2028}"),
    ] {
        assert!(
            matches!(
                Checkpoint::from_body(&format!("{name}\n1\n{root}\n")),
                Err(CheckpointError::InvalidBase64 { field: "root hash" })
            ),
            "root {root:?} accepted"
        );
    }
    let url_safe = STANDARD.encode([0xfbu8; 32]).replace('+', "-").replace('/', "_");
    assert!(matches!(
        Checkpoint::from_body(&format!("{name}\n1\n{url_safe}\n")),
        Err(CheckpointError::InvalidBase64 { field: "root hash" })
    ));
    assert_eq!(
        Checkpoint::from_body(&format!("{name}\n1\n{}\n", STANDARD.encode([0u8; 31]))),
        Err(CheckpointError::RootHashLength { len: 31, expected: 32 })
    );
    // Signatures: non-canonical base64, too short, bad names, a wrong-length signature by a known key.
    let blob = sig_line.trim_end().rsplit(' ').next().unwrap();
    assert_eq!(
        open(&good.replace(blob, blob.trim_end_matches('='))),
        Err(CheckpointError::InvalidBase64 { field: "signature" })
    );
    assert!(matches!(
        open(&good.replace(sig_line, "\u{2014} x AAAAAA==\n")),
        Err(CheckpointError::SignatureTooShort { len: 4, .. })
    ));
    for bad_name in ["a+b", "a\u{a0}b", "a\u{2003}b"] {
        let line = format!("\u{2014} {bad_name} {blob}\n");
        assert!(matches!(open(&good.replace(sig_line, &line)), Err(CheckpointError::InvalidKeyName { .. })));
    }
    let id = verifier.key_id().to_be_bytes();
    let short_sig = format!("\u{2014} {name} {}\n", STANDARD.encode([&id[..], &[0u8; 63]].concat()));
    assert!(matches!(open(&good.replace(sig_line, &short_sig)), Err(CheckpointError::InvalidSignature { .. })));
    // Bounds: a long line, a large note.
    let long_origin = "o".repeat(MAX_LINE_BYTES + 1);
    assert!(matches!(
        open(&with_body(&format!("{long_origin}\n1\n{root_b64}\n"))),
        Err(CheckpointError::LineTooLong { line: 1, .. })
    ));
    let huge = format!("{good}{}", sig_line.repeat(MAX_NOTE_BYTES / sig_line.len()));
    assert!(matches!(open(&huge), Err(CheckpointError::TooLarge { .. })));
    // Signing refuses what parsing would refuse.
    assert!(matches!(SignedNote::sign("no newline", &key, name), Err(CheckpointError::MissingFinalNewline)));
    assert!(matches!(SignedNote::sign("a\rb\n", &key, name), Err(CheckpointError::ControlCharacter { .. })));
    assert!(matches!(SignedNote::sign(TEXT, &key, "bad name"), Err(CheckpointError::InvalidKeyName { .. })));
    assert!(matches!(SignedNote::sign(TEXT, &key, ""), Err(CheckpointError::InvalidKeyName { .. })));
    for (field, checkpoint) in [
        ("origin", Checkpoint { origin: String::new(), ..runner_checkpoint() }),
        ("origin", Checkpoint { origin: "a\nb".into(), ..runner_checkpoint() }),
        ("extension", Checkpoint { extensions: vec![String::new()], ..runner_checkpoint() }),
        ("extension", Checkpoint { extensions: vec!["a\nb".into()], ..runner_checkpoint() }),
        ("origin", Checkpoint { origin: "a\rb".into(), ..runner_checkpoint() }),
    ] {
        assert!(checkpoint.sign(&key, name).is_err(), "{field}: {checkpoint:?}");
    }
}

#[test]
fn error_messages_escape_outside_text() {
    let err = Checkpoint::from_body("o\n\u{1b}[2J1\nAAAA\n").unwrap_err();
    assert!(matches!(err, CheckpointError::ControlCharacter { byte: 0x1b, .. }));
    let err = Checkpoint::from_body("o\n1\u{85}\nAAAA\n").unwrap_err();
    assert!(!err.to_string().contains('\u{85}'), "{err}");
}
