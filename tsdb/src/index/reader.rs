//! Reads a block's index file in place, validating everything it hands out.
//!
//! [`BlockIndex::new`] checks the header, the table of contents and the framing of every
//! section, checksums the small sections and validates their contents (symbols sorted and
//! unique, tables in range and tiling their section). Afterwards only the large sections
//! are read lazily: each series entry and postings list is checksummed and decoded with
//! bounds checks on every access. The in-memory footprint is every 32nd symbol's offset
//! and one small record per label name.

use std::ops::Range;

use super::encoding::{Decbuf, DecodeError};
use super::{
    BlockSeriesRef, CRC_LEN, HEADER_LEN, IndexSummary, LABEL_NAME_ENTRY_LEN, LABEL_VALUE_ENTRY_LEN,
    LABEL_VALUE_TABLE_HEADER_LEN, MAGIC, SECTION_LEN_LEN, TOC_LEN, Toc, VERSION,
};
use crate::Labels;
use crate::block::{BlockChunkRef, ChunkMeta};
use crate::error::StorageError;
use crate::mmap::MappedFile;
use crate::postings::IndexReader;

/// One in this many symbols has its offset kept in memory; finding a symbol by reference
/// decodes at most this many entries. Every selected series looks up each of its label
/// names and values: at 8 the offsets take a byte per symbol and a lookup skips 3.5
/// entries on average (at 32, 15.5: a sixth of a 100-series instant query's time).
const SYMBOL_SAMPLE: usize = 8;

/// A block's index, read in place from its file.
#[derive(Debug)]
pub struct BlockIndex {
    file: MappedFile,
    toc: Toc,
    symbols: Symbols,
    /// Bodies (between the length and the CRC) of the two lazily checked sections.
    series: Range<usize>,
    postings: Range<usize>,
    /// One record per label name, sorted by name.
    names: Vec<NameTable>,
}

#[derive(Debug)]
struct Symbols {
    /// From the first symbol to the end of the section body.
    entries: Range<usize>,
    count: u32,
    /// Absolute offset of symbol `i * SYMBOL_SAMPLE`, for each `i`.
    sampled: Vec<usize>,
}

impl Symbols {
    /// The symbol with reference `r`, from the index bytes `b`.
    fn get<'a>(&self, b: &'a [u8], r: u32) -> Result<&'a str, DecodeError> {
        if r >= self.count {
            return Err("symbol reference out of range");
        }
        let r = r as usize;
        let start = *self
            .sampled
            .get(r / SYMBOL_SAMPLE)
            .ok_or("symbol reference out of range")?;
        let mut d = Decbuf::new(b.get(start..self.entries.end).ok_or("bad symbol offset")?);
        for _ in 0..r % SYMBOL_SAMPLE {
            let n = d.uvarint_usize()?;
            d.bytes(n)?;
        }
        read_symbol(&mut d)
    }
}

/// A label name and where its label-value table's entries are.
#[derive(Debug)]
struct NameTable {
    name: String,
    /// Absolute offset of the first `value ref | postings offset` entry.
    entries: usize,
    count: usize,
}

impl BlockIndex {
    /// Validates the index in `file` (see the module docs for what is checked now and what
    /// on each read).
    pub fn new(file: MappedFile) -> Result<BlockIndex, StorageError> {
        let (toc, symbols, series, postings, names) = {
            let v = Validator { b: file.as_slice() };
            v.run()
                .map_err(|msg| StorageError::corrupt(file.path(), msg))?
        };
        Ok(BlockIndex {
            file,
            toc,
            symbols,
            series,
            postings,
            names,
        })
    }

    /// The index file's size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.file.len() as u64
    }

    /// What the index records about its block (checked against `meta.json` on open).
    pub(crate) fn summary(&self) -> &IndexSummary {
        &self.toc.summary
    }

    fn corrupt(&self, msg: impl Into<String>) -> StorageError {
        StorageError::corrupt(self.file.path(), msg)
    }

    /// The label set and chunk metas of the series at `r`, a reference from one of this
    /// index's postings lists.
    pub fn series(&self, r: BlockSeriesRef) -> Result<(Labels, Vec<ChunkMeta>), StorageError> {
        let b = self.file.as_slice();
        let off = r
            .offset()
            .and_then(|o| usize::try_from(o).ok())
            .filter(|o| self.series.contains(o))
            .ok_or_else(|| self.corrupt(format!("series reference {} out of range", r.0)))?;
        let body = checked_entry(&b[off..self.series.end])
            .map_err(|e| self.corrupt(format!("series {}: {e}", r.0)))?;
        self.decode_series(body)
            .map_err(|e| self.corrupt(format!("series {}: {e}", r.0)))
    }

    fn decode_series(&self, body: &[u8]) -> Result<(Labels, Vec<ChunkMeta>), String> {
        let mut d = Decbuf::new(body);
        let n = d.uvarint_usize()?;
        let mut pairs = Vec::with_capacity(n.min(d.len() / 2));
        let mut prev_name = None;
        for _ in 0..n {
            let name = sym_ref(d.uvarint()?)?;
            let value = sym_ref(d.uvarint()?)?;
            // Symbol order is string order, so sorted unique names have increasing refs.
            if prev_name.is_some_and(|p| p >= name) {
                return Err("label names not sorted".into());
            }
            prev_name = Some(name);
            pairs.push((self.symbol(name)?, self.symbol(value)?));
        }
        if pairs.is_empty() {
            return Err("series without labels".into());
        }
        let n = d.uvarint_usize()?;
        let mut chunks = Vec::with_capacity(n.min(d.len() / 3));
        let (block_min, block_max) = (self.toc.summary.min_time, self.toc.summary.max_time);
        let mut prev: Option<ChunkMeta> = None;
        for _ in 0..n {
            let (min_time, r) = match prev {
                None => (d.varint()?, 0),
                Some(p) => {
                    let gap = d.uvarint()?;
                    if gap == 0 {
                        return Err("chunks overlap".into());
                    }
                    let t = p
                        .max_time
                        .checked_add_unsigned(gap)
                        .ok_or("chunk time overflows")?;
                    (t, p.chunk_ref.0)
                }
            };
            let max_time = min_time
                .checked_add_unsigned(d.uvarint()?)
                .ok_or("chunk time overflows")?;
            let delta = d.uvarint()?;
            if prev.is_some() && delta == 0 {
                return Err("chunk references not increasing".into());
            }
            let chunk_ref = r.checked_add(delta).ok_or("chunk reference overflows")?;
            if min_time < block_min || max_time > block_max {
                return Err(format!(
                    "chunk [{min_time}, {max_time}] outside the block's [{block_min}, {block_max}]"
                ));
            }
            let c = ChunkMeta {
                min_time,
                max_time,
                chunk_ref: BlockChunkRef(chunk_ref),
            };
            chunks.push(c);
            prev = Some(c);
        }
        if !d.is_empty() {
            return Err("trailing bytes after the chunk metas".into());
        }
        Ok((Labels::from_sorted_unchecked(pairs.into_iter()), chunks))
    }

    /// The symbol with reference `r`.
    fn symbol(&self, r: u32) -> Result<&str, DecodeError> {
        self.symbols.get(self.file.as_slice(), r)
    }

    /// The reference of symbol `s`, if it is one.
    fn lookup_symbol(&self, s: &str) -> Result<Option<u32>, DecodeError> {
        let sampled = &self.symbols.sampled;
        // The last sample not after `s`; symbols are sorted, so `s` can only follow it.
        let mut lo = 0;
        let mut hi = sampled.len();
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.symbol((mid * SYMBOL_SAMPLE) as u32)? <= s {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Ok(None);
        }
        let first = (lo - 1) * SYMBOL_SAMPLE;
        let b = self.file.as_slice();
        let mut d = Decbuf::new(
            b.get(sampled[lo - 1]..self.symbols.entries.end)
                .ok_or("bad symbol offset")?,
        );
        let end = (first + SYMBOL_SAMPLE).min(self.symbols.count as usize);
        for r in first..end {
            match read_symbol(&mut d)?.cmp(s) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Ok(Some(r as u32)),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    fn name_table(&self, name: &str) -> Option<&NameTable> {
        self.names
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.names[i])
    }

    /// Entry `i` of a label-value table: value reference and postings offset. The table
    /// was validated on open, so failures here mean a bug, still reported as corruption.
    fn table_entry(&self, t: &NameTable, i: usize) -> Result<(u32, u64), DecodeError> {
        let off = t.entries + i * LABEL_VALUE_ENTRY_LEN;
        let b = self
            .file
            .as_slice()
            .get(off..off + LABEL_VALUE_ENTRY_LEN)
            .ok_or("label-value entry out of range")?;
        let mut d = Decbuf::new(b);
        Ok((d.u32()?, d.u64()?))
    }

    /// The postings list at absolute offset `off`.
    fn postings_at(&self, off: u64) -> Result<Vec<u64>, StorageError> {
        let fail = |e: &str| self.corrupt(format!("postings list at offset {off}: {e}"));
        let start = usize::try_from(off)
            .ok()
            .filter(|o| self.postings.contains(o))
            .ok_or_else(|| fail("offset out of range"))?;
        let body = checked_entry(&self.file.as_slice()[start..self.postings.end]).map_err(fail)?;
        decode_postings(body, &self.series).map_err(fail)
    }

    /// Checks the CRC32C of the series and postings sections as wholes (every entry's own
    /// CRC is checked whenever it is read). Reads the whole file: for offline checks.
    pub fn verify_sections(&self) -> Result<(), StorageError> {
        let b = self.file.as_slice();
        for (name, body) in [("series", &self.series), ("postings", &self.postings)] {
            let crc = Decbuf::new(&b[body.end..])
                .u32()
                .map_err(|e| self.corrupt(e))?;
            if crc32c::crc32c(&b[body.clone()]) != crc {
                return Err(self.corrupt(format!("{name} section checksum mismatch")));
            }
        }
        Ok(())
    }
}

impl IndexReader for BlockIndex {
    fn label_values(&self, name: &str) -> Result<Vec<String>, StorageError> {
        let Some(t) = self.name_table(name) else {
            return Ok(Vec::new());
        };
        (0..t.count)
            .map(|i| {
                let (v, _) = self.table_entry(t, i).map_err(|e| self.corrupt(e))?;
                self.symbol(v)
                    .map(str::to_owned)
                    .map_err(|e| self.corrupt(e))
            })
            .collect()
    }

    fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>, StorageError> {
        let Some(t) = self.name_table(name) else {
            return Ok(Vec::new());
        };
        let Some(v) = self.lookup_symbol(value).map_err(|e| self.corrupt(e))? else {
            return Ok(Vec::new());
        };
        let (mut lo, mut hi) = (0, t.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (r, off) = self.table_entry(t, mid).map_err(|e| self.corrupt(e))?;
            match r.cmp(&v) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.postings_at(off),
            }
        }
        Ok(Vec::new())
    }

    fn all_postings(&self) -> Result<Vec<u64>, StorageError> {
        self.postings_at(self.toc.all_postings)
    }

    fn label_names(&self) -> Result<Vec<String>, StorageError> {
        Ok(self.names.iter().map(|t| t.name.clone()).collect())
    }
}

/// Splits `len <uvarint> | body <len> | crc32c(body) <4>` off the front of `b` and
/// returns the body once its CRC matches.
fn checked_entry(b: &[u8]) -> Result<&[u8], DecodeError> {
    let mut d = Decbuf::new(b);
    let len = d.uvarint_usize()?;
    let body = d.bytes(len)?;
    if d.u32()? != crc32c::crc32c(body) {
        return Err("checksum mismatch");
    }
    Ok(body)
}

/// Decodes a postings list body; every reference must be increasing and point into the
/// series section body `series`.
fn decode_postings(body: &[u8], series: &Range<usize>) -> Result<Vec<u64>, DecodeError> {
    let mut d = Decbuf::new(body);
    let n = d.uvarint_usize()?;
    let mut out = Vec::with_capacity(n.min(d.len()));
    let mut prev = 0u64;
    for i in 0..n {
        let delta = d.uvarint()?;
        if i > 0 && delta == 0 {
            return Err("references not increasing");
        }
        let r = prev.checked_add(delta).ok_or("reference overflows")?;
        let in_series = BlockSeriesRef(r)
            .offset()
            .and_then(|o| usize::try_from(o).ok())
            .is_some_and(|o| series.contains(&o));
        if !in_series {
            return Err("reference outside the series section");
        }
        out.push(r);
        prev = r;
    }
    if !d.is_empty() {
        return Err("trailing bytes after the references");
    }
    Ok(out)
}

fn read_symbol<'a>(d: &mut Decbuf<'a>) -> Result<&'a str, DecodeError> {
    let n = d.uvarint_usize()?;
    std::str::from_utf8(d.bytes(n)?).map_err(|_| "symbol is not UTF-8")
}

fn sym_ref(r: u64) -> Result<u32, DecodeError> {
    u32::try_from(r).map_err(|_| "symbol reference out of range")
}

/// Open-time validation of a whole index file.
struct Validator<'a> {
    b: &'a [u8],
}

type Validated = (Toc, Symbols, Range<usize>, Range<usize>, Vec<NameTable>);

impl<'a> Validator<'a> {
    fn run(&self) -> Result<Validated, String> {
        let b = self.b;
        if b.len() < HEADER_LEN + TOC_LEN {
            return Err(format!("file too short ({} bytes)", b.len()));
        }
        let mut d = Decbuf::new(b);
        let magic = d.u32()?;
        if magic != MAGIC {
            return Err(format!("bad magic {magic:#010x}"));
        }
        let version = d.u8()?;
        if version != VERSION {
            return Err(format!("unsupported version {version}"));
        }
        if d.bytes(3)? != [0, 0, 0] {
            return Err("non-zero header padding".into());
        }
        let toc_start = b.len() - TOC_LEN;
        let toc = Toc::decode(&b[toc_start..])?;
        if toc.summary.min_time > toc.summary.max_time {
            return Err("block time range is empty".into());
        }

        // Sections follow each other without gaps, from the header to the TOC.
        let offs = [
            ("symbols", toc.symbols),
            ("series", toc.series),
            ("postings", toc.postings),
            ("label-value tables", toc.label_values),
            ("label names", toc.label_names),
        ];
        let mut bodies = Vec::with_capacity(offs.len());
        let mut expect = HEADER_LEN;
        for (name, off) in offs {
            if off != expect as u64 {
                return Err(format!("{name} section at offset {off}, expected {expect}"));
            }
            let body = self
                .section(expect, toc_start)
                .map_err(|e| format!("{name} section: {e}"))?;
            expect = body.end + CRC_LEN;
            bodies.push(body);
        }
        if expect != toc_start {
            return Err(format!(
                "{} unexpected bytes before the table of contents",
                toc_start - expect
            ));
        }
        let [sym_body, series, postings, lv_body, ln_body] =
            <[Range<usize>; 5]>::try_from(bodies).map_err(|_| "section count")?;
        for (name, body) in [
            ("symbols", &sym_body),
            ("label-value tables", &lv_body),
            ("label names", &ln_body),
        ] {
            if crc32c::crc32c(&b[body.clone()]) != Decbuf::new(&b[body.end..]).u32()? {
                return Err(format!("{name} section checksum mismatch"));
            }
        }
        let symbols = self.symbols(sym_body)?;
        let names = self.names(&symbols, ln_body, lv_body, &postings)?;
        let all = usize::try_from(toc.all_postings).ok();
        if !all.is_some_and(|o| postings.contains(&o)) {
            return Err("all-series postings offset out of range".into());
        }
        Ok((toc, symbols, series, postings, names))
    }

    /// The body range of the section at `off`, which must end before `limit`.
    fn section(&self, off: usize, limit: usize) -> Result<Range<usize>, String> {
        let mut d = Decbuf::new(&self.b[off..limit]);
        let len = d.u64()?;
        let start = off + SECTION_LEN_LEN;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e.checked_add(CRC_LEN).is_some_and(|c| c <= limit))
            .ok_or_else(|| format!("length {len} runs past the end of the file"))?;
        Ok(start..end)
    }

    fn symbols(&self, body: Range<usize>) -> Result<Symbols, String> {
        let mut d = Decbuf::new(&self.b[body.clone()]);
        let count = d.u32()?;
        let entries = body.end - d.len()..body.end;
        let mut sampled = Vec::with_capacity((count as usize).div_ceil(SYMBOL_SAMPLE));
        let mut prev: Option<&str> = None;
        for i in 0..count as usize {
            if i % SYMBOL_SAMPLE == 0 {
                sampled.push(body.end - d.len());
            }
            let s = read_symbol(&mut d).map_err(|e| format!("symbol {i}: {e}"))?;
            if s.is_empty() {
                return Err(format!("symbol {i} is empty"));
            }
            if prev.is_some_and(|p| p >= s) {
                return Err(format!("symbol {i} out of order"));
            }
            prev = Some(s);
        }
        if !d.is_empty() {
            return Err("trailing bytes after the symbols".into());
        }
        Ok(Symbols {
            entries,
            count,
            sampled,
        })
    }

    /// Validates the label-name table and every label-value table it points to; the
    /// tables must tile their section in name order.
    fn names(
        &self,
        symbols: &Symbols,
        ln_body: Range<usize>,
        lv_body: Range<usize>,
        postings: &Range<usize>,
    ) -> Result<Vec<NameTable>, String> {
        let b = self.b;
        let mut d = Decbuf::new(&b[ln_body]);
        let count = d.u32()? as usize;
        if Some(d.len()) != count.checked_mul(LABEL_NAME_ENTRY_LEN) {
            return Err(format!(
                "label names: {} bytes for {count} entries",
                d.len()
            ));
        }
        let mut out: Vec<NameTable> = Vec::with_capacity(count);
        let mut next_table = lv_body.start;
        let mut prev_name: Option<u32> = None;
        for i in 0..count {
            let name_ref = d.u32()?;
            let table = d.u64()?;
            if prev_name.is_some_and(|p| p >= name_ref) {
                return Err(format!("label name {i} out of order"));
            }
            prev_name = Some(name_ref);
            let name = symbols
                .get(b, name_ref)
                .map_err(|e| format!("label name {i}: {e}"))?;
            if table != next_table as u64 {
                return Err(format!(
                    "label-value table of {name:?} at offset {table}, expected {next_table}"
                ));
            }
            let mut t = Decbuf::new(&b[next_table..lv_body.end]);
            if t.u32()? != name_ref {
                return Err(format!("label-value table of {name:?} names another label"));
            }
            let n = t.u32()? as usize;
            let entries = next_table + LABEL_VALUE_TABLE_HEADER_LEN;
            let bytes = n
                .checked_mul(LABEL_VALUE_ENTRY_LEN)
                .filter(|&l| l <= t.len())
                .ok_or_else(|| format!("label-value table of {name:?} runs past its section"))?;
            if n == 0 {
                return Err(format!("label-value table of {name:?} is empty"));
            }
            let mut prev_value: Option<u32> = None;
            for _ in 0..n {
                let v = t.u32()?;
                let off = t.u64()?;
                if v >= symbols.count || prev_value.is_some_and(|p| p >= v) {
                    return Err(format!(
                        "label-value table of {name:?}: bad value reference"
                    ));
                }
                prev_value = Some(v);
                if !usize::try_from(off).is_ok_and(|o| postings.contains(&o)) {
                    return Err(format!(
                        "label-value table of {name:?}: postings offset {off} out of range"
                    ));
                }
            }
            next_table = entries + bytes;
            out.push(NameTable {
                name: name.to_owned(),
                entries,
                count: n,
            });
        }
        if next_table != lv_body.end {
            return Err("label-value tables do not fill their section".into());
        }
        Ok(out)
    }
}
