//! Hostile: overwrites `logs/a.txt` and `logs/b.txt`, journaling each
//! original first, then traps. `rollback` gets both journal entries and must
//! restore both files exactly.

use salve_playbook::{Change, Context, Error, Playbook, fs, journal, read_all};

struct PartialThenTrap;

const FILES: [&str; 2] = ["logs/a.txt", "logs/b.txt"];

/// Journal entry: path, NUL, original content.
fn entry(path: &str, content: &[u8]) -> Vec<u8> {
    let mut out = path.as_bytes().to_vec();
    out.push(0);
    out.extend_from_slice(content);
    out
}

impl Playbook for PartialThenTrap {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply(_: Context) -> Result<(), Error> {
        for path in FILES {
            let original = read_all(path, 1 << 16)?;
            journal::record(&entry(path, &original))?;
            fs::write(path, b"half-done\n")?;
        }
        panic!("trap after changing two files");
    }
    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn rollback(_: Context, journal: Vec<Vec<u8>>) -> Result<(), Error> {
        // The journal must arrive complete and in the order it was written.
        let paths: Vec<&[u8]> = journal.iter().map(|e| e.split(|&b| b == 0).next().unwrap_or_default()).collect();
        if paths != [FILES[0].as_bytes(), FILES[1].as_bytes()] {
            return Err(Error::failed(format!(
                "journal arrived as {} entries, out of order or incomplete",
                journal.len()
            )));
        }
        for entry in journal.iter().rev() {
            let split = entry.iter().position(|&b| b == 0).ok_or(Error::failed("bad entry"))?;
            let path = std::str::from_utf8(&entry[..split]).map_err(|_| Error::failed("bad path"))?;
            fs::write(path, &entry[split + 1..])?;
        }
        Ok(())
    }
}

salve_playbook::export_playbook!(PartialThenTrap);
