//! The claim journal: how the local bus records an accepted webhook delivery
//! before the webhook answers, in one appended line.
//!
//! A delivery must be durable before GitHub hears `202`, and that write is
//! on every delivery's answer path. As an object of the directory bucket it
//! cost a temporary file, a write into a fresh page, a time stamp, a link
//! and an unlink (about a third of the answer's CPU, measured in issue 11's
//! webhook benchmark). Here it is one `write` to a file opened for appending:
//! `\n{message}\n`, in the bucket's directory (`journal/{segment}.jsonl`)
//! beside its objects, so it survives the process like they do.
//!
//! - Which claims are pending (appended, not yet handled and marked) is kept
//!   in memory, and is built from the segments when the journal opens: a
//!   repeat of a pending delivery is found there, a repeat of a handled one
//!   by its marker (`deliveries/{id}`), which the bus writes before it calls
//!   the claim [`done`](ClaimJournal::done). Only the process owning the
//!   directory bucket writes here (`LocalDirStore::own`).
//! - A segment is deleted once every claim in it is done and it is no longer
//!   the one appended to; a new segment is started past [`SEGMENT_BYTES`]
//!   and at every open (an earlier process's segment is only read).
//! - A record that was cut short (a full disk) is never glued to the next:
//!   every record starts with its own line break, and a line that does not
//!   parse is logged and skipped.
//! - A claim the bus cannot hold in memory now (a backlog while GitHub is
//!   slow) is appended [`Hold::Journal`]: only where its record is stays in
//!   memory, and [`take_parked`](ClaimJournal::take_parked) reads it back
//!   when the bus has room, oldest first.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rustc_hash::FxHashMap;

use crate::ports::bus::Message;

/// Past this size the next claim starts a new segment, so that a segment
/// whose claims are all done can be deleted while the service runs.
pub const SEGMENT_BYTES: u64 = 1024 * 1024;

/// The file name ending of a segment.
const SEGMENT_SUFFIX: &str = ".jsonl";

/// What [`ClaimJournal::reserve`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Nobody holds the message's id: the caller does now, and must either
    /// [`append`](ClaimJournal::append) or [`release`](ClaimJournal::release).
    Reserved,
    /// The message is claimed already (waiting, being handled, or being claimed).
    Held,
}

/// Where the message of an appended claim waits to be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The caller hands it on from memory.
    Memory,
    /// Only in the journal, until [`ClaimJournal::take_parked`] reads it back.
    Journal,
}

/// Where the record of a parked claim is: its JSON, without the line breaks.
#[derive(Debug, Clone, Copy)]
struct Parked {
    segment: u64,
    offset: u64,
    len: usize,
}

/// Where a pending claim is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Reserved, not written yet.
    Reserved,
    /// In this segment.
    In(u64),
}

#[derive(Debug)]
struct Segment {
    number: u64,
    file: File,
    bytes: u64,
}

#[derive(Debug)]
struct State {
    current: Segment,
    /// Pending claims per segment (absent: none).
    open_claims: BTreeMap<u64, usize>,
    /// Pending claims by message id (looked up on every delivery: hashed
    /// with Fx, as the ids come from signed deliveries and this journal).
    pending: FxHashMap<String, Claim>,
    /// The claims earlier processes left, until [`ClaimJournal::recovered`] takes them.
    recovered: Vec<Message>,
    /// Claims held only here, oldest first.
    parked: VecDeque<Parked>,
}

/// The append-only record of claimed deliveries (see the module's text).
#[derive(Debug)]
pub struct ClaimJournal {
    dir: PathBuf,
    state: Mutex<State>,
}

impl ClaimJournal {
    /// Opens the journal in `dir` (creating it): the claims of earlier
    /// segments become pending (see [`recovered`](Self::recovered)) and a new
    /// segment is started.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            if let Some(number) = name
                .to_str()
                .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|number| number.parse::<u64>().ok())
            {
                segments.push(number);
            }
        }
        segments.sort_unstable();
        let mut open_claims = BTreeMap::new();
        let mut pending = FxHashMap::default();
        let mut recovered = Vec::new();
        for &number in &segments {
            let path = segment_path(&dir, number);
            let text = std::fs::read(&path)?;
            let mut claims = 0;
            for line in text.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
                match serde_json::from_slice::<Message>(line) {
                    Ok(message) => {
                        let id = message.id();
                        if pending.contains_key(&id) {
                            continue;
                        }
                        pending.insert(id, Claim::In(number));
                        recovered.push(message);
                        claims += 1;
                    }
                    Err(error) => tracing::error!(
                        path = %path.display(),
                        %error,
                        "skipping a journal line that does not parse (a write cut short)"
                    ),
                }
            }
            if claims == 0 {
                std::fs::remove_file(&path)?;
            } else {
                open_claims.insert(number, claims);
            }
        }
        let next = segments.last().map_or(1, |last| last + 1);
        let current = Segment::create(&dir, next)?;
        Ok(Self {
            dir,
            state: Mutex::new(State {
                current,
                open_claims,
                pending,
                recovered,
                parked: VecDeque::new(),
            }),
        })
    }

    /// The claims earlier processes left that are not done yet, once: the
    /// bus delivers them again (or calls them done when they were handled).
    pub fn recovered(&self) -> Vec<Message> {
        std::mem::take(&mut self.lock().recovered)
    }

    /// Takes the message's id for the caller unless it is pending already.
    pub fn reserve(&self, message: &Message) -> Reservation {
        match self.lock().pending.entry(message.id()) {
            Entry::Occupied(_) => Reservation::Held,
            Entry::Vacant(vacant) => {
                vacant.insert(Claim::Reserved);
                Reservation::Reserved
            }
        }
    }

    /// Gives back a reservation that will not be appended.
    pub fn release(&self, message: &Message) {
        let mut state = self.lock();
        let id = message.id();
        if state.pending.get(&id) == Some(&Claim::Reserved) {
            state.pending.remove(&id);
        }
    }

    /// Appends the reserved `message`: when this returns `Ok`, the claim is
    /// in the file system. It is parked there ([`Hold::Journal`]) unless the
    /// caller has `room` for it in memory and no older claim is parked
    /// (parked claims go first). On an error the reservation is given back.
    pub fn append(&self, message: &Message, room: bool) -> io::Result<Hold> {
        let mut record = Vec::with_capacity(512);
        record.push(b'\n');
        let encoded = serde_json::to_writer(&mut record, message);
        record.push(b'\n');
        let mut state = self.lock();
        let id = message.id();
        let hold = if room && state.parked.is_empty() {
            Hold::Memory
        } else {
            Hold::Journal
        };
        let written = encoded
            .map_err(io::Error::other)
            .and_then(|()| state.append(&self.dir, &record));
        match written {
            Ok((segment, offset)) => {
                *state.open_claims.entry(segment).or_insert(0) += 1;
                if hold == Hold::Journal {
                    state.parked.push_back(Parked {
                        segment,
                        offset: offset + 1,
                        len: record.len() - 2,
                    });
                }
                match state.pending.get_mut(&id) {
                    Some(claim) => *claim = Claim::In(segment),
                    None => {
                        state.pending.insert(id, Claim::In(segment));
                    }
                }
                Ok(hold)
            }
            Err(error) => {
                state.pending.remove(&id);
                Err(error)
            }
        }
    }

    /// The claim of `message` was handled (and its marker written): it is no
    /// longer pending, and its segment goes when nothing else in it is.
    pub fn done(&self, message: &Message) {
        let mut state = self.lock();
        let id = message.id();
        let Some(&Claim::In(segment)) = state.pending.get(&id) else {
            return;
        };
        state.pending.remove(&id);
        let left = match state.open_claims.get_mut(&segment) {
            Some(claims) => {
                *claims = claims.saturating_sub(1);
                *claims
            }
            None => return,
        };
        if left == 0 {
            state.open_claims.remove(&segment);
            if segment != state.current.number {
                remove_segment(&self.dir, segment);
            }
        }
    }

    /// How many claims are pending (reserved or appended).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// How many claims wait only in the journal.
    pub fn parked(&self) -> usize {
        self.lock().parked.len()
    }

    /// Reads back up to `most` parked claims, oldest first: the caller hands
    /// them on. A record that cannot be read stays pending (logged); the
    /// next start delivers it.
    pub fn take_parked(&self, most: usize) -> Vec<Message> {
        let batch: Vec<Parked> = {
            let mut state = self.lock();
            let count = most.min(state.parked.len());
            state.parked.drain(..count).collect()
        };
        let mut messages = Vec::with_capacity(batch.len());
        let mut open: Option<(u64, File)> = None;
        for parked in batch {
            let path = segment_path(&self.dir, parked.segment);
            let read = (|| {
                let file = match open.take() {
                    Some((segment, file)) if segment == parked.segment => file,
                    _ => File::open(&path)?,
                };
                let mut record = vec![0; parked.len];
                file.read_exact_at(&mut record, parked.offset)?;
                open = Some((parked.segment, file));
                serde_json::from_slice::<Message>(&record).map_err(io::Error::other)
            })();
            match read {
                Ok(message) => messages.push(message),
                Err(error) => tracing::error!(
                    path = %path.display(),
                    offset = parked.offset,
                    %error,
                    "cannot read a parked claim back; the next start delivers it"
                ),
            }
        }
        messages
    }

    /// The journal's segment files, oldest first.
    #[cfg(test)]
    pub fn segments(&self) -> io::Result<Vec<PathBuf>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
            .collect();
        paths.sort();
        Ok(paths)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every line: a panic elsewhere while
        // it was held leaves nothing half-changed to refuse.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// Writes `record` to the current segment (starting a new one when it
    /// is full) and says which segment holds it, from which offset.
    fn append(&mut self, dir: &Path, record: &[u8]) -> io::Result<(u64, u64)> {
        if self.current.bytes >= SEGMENT_BYTES {
            let next = Segment::create(dir, self.current.number + 1)?;
            let full = std::mem::replace(&mut self.current, next);
            if !self.open_claims.contains_key(&full.number) {
                remove_segment(dir, full.number);
            }
        }
        // Only this process appends (under the state's lock), so the record
        // lands at the segment's length.
        let offset = self.current.bytes;
        (&self.current.file).write_all(record)?;
        self.current.bytes += record.len() as u64;
        Ok((self.current.number, offset))
    }
}

impl Segment {
    fn create(dir: &Path, number: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(segment_path(dir, number))?;
        Ok(Self {
            number,
            file,
            bytes: 0,
        })
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    // Zero-padded, so that names sort as numbers do.
    dir.join(format!("{number:020}{SEGMENT_SUFFIX}"))
}

fn remove_segment(dir: &Path, number: u64) {
    let path = segment_path(dir, number);
    if let Err(error) = std::fs::remove_file(&path)
        && error.kind() != io::ErrorKind::NotFound
    {
        // Left behind, it is read again at the next open: its claims are
        // found handled by their markers then.
        tracing::warn!(path = %path.display(), %error, "cannot remove a finished journal segment");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::dispatch;

    fn claim(journal: &ClaimJournal, message: &Message) {
        assert_eq!(journal.reserve(message), Reservation::Reserved);
        assert_eq!(journal.append(message, true).expect("append"), Hold::Memory);
    }

    #[test]
    fn a_claim_is_held_until_done_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dispatch("d-a"), dispatch("d-b"));
        {
            let journal = ClaimJournal::open(dir.path()).expect("open");
            claim(&journal, &a);
            claim(&journal, &b);
            assert_eq!(journal.reserve(&a), Reservation::Held);
            journal.done(&a);
            assert_eq!(journal.pending(), 1);
            // Dropped without `done(b)`: the process died.
        }
        let journal = ClaimJournal::open(dir.path()).expect("reopen");
        // Both lines are read again (whether `a` was handled is its
        // marker's to say); both are held until the bus says they are done.
        assert_eq!(journal.recovered(), vec![a.clone(), b.clone()]);
        assert!(journal.recovered().is_empty(), "taken once");
        assert_eq!(journal.reserve(&b), Reservation::Held);
        journal.done(&a);
        journal.done(&b);
        assert_eq!(journal.pending(), 0);
        // The earlier segment is gone; the new (empty) one stays.
        assert_eq!(journal.segments().expect("segments").len(), 1);
        assert_eq!(journal.reserve(&b), Reservation::Reserved);
    }

    #[test]
    fn a_released_reservation_frees_the_id_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = ClaimJournal::open(dir.path()).expect("open");
        let a = dispatch("d-a");
        assert_eq!(journal.reserve(&a), Reservation::Reserved);
        assert_eq!(journal.reserve(&a), Reservation::Held);
        journal.release(&a);
        assert_eq!(journal.reserve(&a), Reservation::Reserved);
        journal.release(&a);
        drop(journal);
        let reopened = ClaimJournal::open(dir.path()).expect("reopen");
        assert!(reopened.recovered().is_empty());
    }

    #[test]
    fn a_record_cut_short_is_skipped_and_the_next_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dispatch("d-a"), dispatch("d-b"));
        {
            let journal = ClaimJournal::open(dir.path()).expect("open");
            claim(&journal, &a);
            let segment = journal.segments().expect("segments").remove(0);
            // A write cut short by a full disk: half a record, no line end.
            let whole = format!("\n{}\n", serde_json::to_string(&b).expect("json"));
            let mut file = OpenOptions::new()
                .append(true)
                .open(&segment)
                .expect("segment");
            file.write_all(&whole.as_bytes()[..whole.len() / 2])
                .expect("torn");
            // The retry of the same delivery.
            claim(&journal, &b);
        }
        let journal = ClaimJournal::open(dir.path()).expect("reopen");
        assert_eq!(journal.recovered(), vec![a, b]);
    }

    #[test]
    fn parked_claims_are_read_back_oldest_first_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = ClaimJournal::open(dir.path()).expect("open");
        let mut parked = Vec::new();
        let mut n = 0;
        // Parked claims between claims held in memory, over two segments.
        while !segment_path(dir.path(), 2).exists() || parked.len() < 3000 {
            let message = dispatch(&format!("d-{n}"));
            assert_eq!(journal.reserve(&message), Reservation::Reserved);
            // Room in memory now and then: parked claims still go first.
            let room = n % 3 == 0;
            let hold = journal.append(&message, room).expect("append");
            if n == 0 {
                assert_eq!(hold, Hold::Memory);
            } else {
                assert_eq!(hold, Hold::Journal);
                parked.push(message);
            }
            n += 1;
        }
        assert_eq!(journal.parked(), parked.len());
        let mut read = Vec::new();
        loop {
            let batch = journal.take_parked(500);
            if batch.is_empty() {
                break;
            }
            read.extend(batch);
        }
        assert_eq!(read, parked);
        assert_eq!(journal.parked(), 0);
        // Still pending (a repeat is a duplicate) until the bus says done.
        assert_eq!(journal.reserve(&parked[0]), Reservation::Held);
        // Nothing parked: room in memory is used again.
        let next = dispatch("d-next");
        claim(&journal, &next);
    }

    #[test]
    fn full_segments_are_deleted_once_their_claims_are_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = ClaimJournal::open(dir.path()).expect("open");
        let first = dispatch("d-first");
        claim(&journal, &first);
        let mut n = 0;
        // Fill segments past their size with claims done at once.
        let third = segment_path(dir.path(), 3);
        while !third.exists() {
            let message = dispatch(&format!("d-{n}"));
            claim(&journal, &message);
            journal.done(&message);
            n += 1;
        }
        // The first segment waits for `first`; the full one in between,
        // whose claims were all done, is gone.
        let segments = journal.segments().expect("segments");
        assert_eq!(
            segments,
            vec![segment_path(dir.path(), 1), third.clone()],
            "{segments:?}"
        );
        journal.done(&first);
        assert_eq!(journal.segments().expect("segments"), vec![third]);
        assert_eq!(journal.pending(), 0);
    }
}
