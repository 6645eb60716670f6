//! The bundle's container: a POSIX ustar archive of regular files, as any
//! `tar` reads it. Written deterministically (fixed mode, owner and time);
//! read strictly: regular files with plain names only, each once, every
//! header's checksum right, nothing after the end but zero blocks.

use std::collections::BTreeMap;

const BLOCK: usize = 512;
/// What a name may be: `[a-z0-9._-]` segments joined by `/`.
const MAX_NAME: usize = 100;

/// Writes `files` (name → bytes) as a ustar archive, in name order.
pub fn write(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, bytes) in files {
        debug_assert!(valid_name(name), "{name}");
        let mut header = [0u8; BLOCK];
        header[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut header[100..108], 0o644);
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], bytes.len() as u64);
        octal(&mut header[136..148], 0);
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        let sum = checksum(&header);
        octal(&mut header[148..155], sum);
        header[155] = b' ';
        out.extend_from_slice(&header);
        out.extend_from_slice(bytes);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

/// Reads an archive [`write`] wrote (or any ustar archive of regular files
/// with plain names). The error says what was wrong and where.
pub fn read(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files = BTreeMap::new();
    let mut at = 0;
    loop {
        let header = bytes
            .get(at..at + BLOCK)
            .ok_or_else(|| format!("it ends at byte {} inside a header, or without the end-of-archive blocks", at))?;
        if header.iter().all(|&b| b == 0) {
            let rest = &bytes[at..];
            if rest.len() < 2 * BLOCK || rest.iter().any(|&b| b != 0) {
                return Err(format!("bytes follow the end-of-archive block at byte {at}"));
            }
            return Ok(files);
        }
        if &header[257..263] != b"ustar\0" || &header[263..265] != b"00" {
            return Err(format!("the header at byte {at} is not a POSIX ustar header"));
        }
        let stored =
            parse_octal(&header[148..156]).ok_or_else(|| format!("the header at byte {at} has no checksum"))?;
        if stored != checksum(header) {
            return Err(format!("the header at byte {at} does not match its checksum"));
        }
        let name_end = header[..MAX_NAME].iter().position(|&b| b == 0).unwrap_or(MAX_NAME);
        let name = std::str::from_utf8(&header[..name_end])
            .ok()
            .filter(|n| valid_name(n) && header[345..500].iter().all(|&b| b == 0))
            .ok_or_else(|| format!("the entry at byte {at} has a name salve never writes"))?
            .to_string();
        if !matches!(header[156], b'0' | 0) {
            return Err(format!("{name} is not a regular file (type {:?})", header[156] as char));
        }
        let size = parse_octal(&header[124..136]).ok_or_else(|| format!("{name} has no size"))?;
        let start = at + BLOCK;
        let end = usize::try_from(size)
            .ok()
            .and_then(|size| start.checked_add(size))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| format!("{name} says it holds {size} bytes, more than the archive has"))?;
        if files.insert(name.clone(), bytes[start..end].to_vec()).is_some() {
            return Err(format!("{name} is in the archive twice"));
        }
        at = end.next_multiple_of(BLOCK);
    }
}

/// Whether salve writes a file under this name.
pub fn valid_name(name: &str) -> bool {
    name.len() < MAX_NAME
        && name.split('/').all(|segment| {
            !segment.is_empty()
                && !segment.starts_with('.')
                && segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
}

fn checksum(header: &[u8]) -> u64 {
    header.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { u64::from(b' ') } else { u64::from(b) }).sum()
}

/// Zero-padded octal, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?.trim_matches(|c| c == '\0' || c == ' ');
    if text.is_empty() {
        return None;
    }
    u64::from_str_radix(text, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("a.json".to_string(), b"{}".to_vec()),
            ("policies/x.cedar".to_string(), vec![7; 1000]),
            ("empty".to_string(), Vec::new()),
        ])
    }

    #[test]
    fn what_is_written_reads_back() {
        let archive = write(&sample());
        assert_eq!(archive.len() % BLOCK, 0);
        assert_eq!(read(&archive).unwrap(), sample());
    }

    #[test]
    fn system_tar_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar");
        std::fs::write(&path, write(&sample())).unwrap();
        let Ok(listed) = std::process::Command::new("tar").arg("tf").arg(&path).output() else { return };
        assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
        assert_eq!(String::from_utf8(listed.stdout).unwrap(), "a.json\nempty\npolicies/x.cedar\n");
    }

    #[test]
    fn refuses_what_it_never_writes() {
        let good = write(&sample());
        let mut bad_sum = good.clone();
        bad_sum[0] = b'b';
        assert!(read(&bad_sum).unwrap_err().contains("checksum"));
        let mut link = good.clone();
        link[156] = b'2';
        let sum = checksum(&link[..BLOCK]);
        octal(&mut link[148..155], sum);
        assert!(read(&link).unwrap_err().contains("not a regular file"));
        assert!(read(&good[..good.len() - BLOCK]).unwrap_err().contains("end"));
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"more");
        assert!(read(&trailing).unwrap_err().contains("follow"));
        let twice = {
            let one = write(&BTreeMap::from([("a".to_string(), b"1".to_vec())]));
            let mut both = one[..2 * BLOCK].to_vec();
            both.extend_from_slice(&one);
            both
        };
        assert!(read(&twice).unwrap_err().contains("twice"));
        for name in ["../x", "/etc/passwd", "a//b", ".hidden", "A.json"] {
            assert!(!valid_name(name), "{name}");
        }
    }
}
