//! Importing coupon codes from CSV, streamed: the body is parsed as its
//! chunks arrive, so memory stays bounded whatever the file's size (one
//! field of at most 1 KiB, plus one batch of codes).
//!
//! Format: what a spreadsheet exports (RFC 4180, read by [`CodeRows`]): a
//! header row naming the columns, one of them `code` (any case); the codes
//! in that column (4..=64 of `[A-Z0-9-]` in any case, stored upper-cased);
//! other columns ignored; quoted fields, CRLF or LF, an optional UTF-8
//! byte-order mark. Blank rows are skipped. A row without a valid code is
//! rejected with its line number and the import goes on; a code that exists
//! already (in this file or any campaign) is counted as a duplicate. A file
//! whose header has no `code` column is refused.
//!
//! [`ImportCodes`] is the use case (the campaign must exist; the issue gate
//! counts again afterwards); [`import_codes`] is the streaming import itself.

use std::fmt::Display;
use std::sync::Arc;

use domain::coupon::{CampaignId, CouponStore, IssueGate};
use domain::error::Unavailable;
use domain::ordering::CouponCode;
use futures_util::{Stream, StreamExt as _};
use thiserror::Error;

use super::code_csv::{CodeRows, Row};
use super::{CODE_BATCH, CampaignError};

pub use super::code_csv::MAX_LINE;
/// How many rejected lines the report lists; the count is always complete.
pub const MAX_LISTED_REJECTIONS: usize = 1_000;

/// One rejected line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub line: u64,
    pub reason: &'static str,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub imported: usize,
    pub duplicates: usize,
    /// The first [`MAX_LISTED_REJECTIONS`] rejected lines.
    pub rejected: Vec<Rejected>,
    pub rejected_count: u64,
}

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("campaign {0} does not exist")]
    CampaignNotFound(CampaignId),
    /// The header row has no `code` column, or the file has no header row.
    #[error("the header row has no `code` column")]
    NoCodeColumn,
    #[error("the upload could not be read: {0}")]
    Read(String),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl From<CampaignError> for ImportError {
    fn from(err: CampaignError) -> Self {
        match err {
            CampaignError::NotFound(id) => Self::CampaignNotFound(id),
            CampaignError::Unavailable(u) => Self::Unavailable(u),
        }
    }
}

/// An admin imports codes from a CSV upload into a campaign's pool.
pub struct ImportCodes {
    store: Arc<dyn CouponStore>,
    gate: Arc<dyn IssueGate>,
}

impl std::fmt::Debug for ImportCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImportCodes")
    }
}

impl ImportCodes {
    pub fn new(store: Arc<dyn CouponStore>, gate: Arc<dyn IssueGate>) -> Self {
        Self { store, gate }
    }

    /// Imports codes from a CSV upload (see [`import_codes`]).
    ///
    /// # Errors
    /// [`ImportError`]; an unknown campaign is refused before any byte is read.
    pub async fn execute<S, E>(
        &self,
        id: CampaignId,
        chunks: S,
    ) -> Result<ImportReport, ImportError>
    where
        S: Stream<Item = Result<Vec<u8>, E>>,
        E: Display,
    {
        if self.store.campaign(id).await?.is_none() {
            return Err(ImportError::CampaignNotFound(id));
        }
        let report = import_codes(&*self.store, id, chunks).await;
        // The pool may have grown even if the import failed halfway.
        if let Err(err) = self.gate.forget(id).await {
            tracing::warn!(error = %err, "could not reset the issue gate");
        }
        report
    }
}

/// Feeds one campaign's pool from rows.
struct Importer<'a> {
    store: &'a dyn CouponStore,
    campaign: CampaignId,
    batch: Vec<CouponCode>,
    report: ImportReport,
}

impl Importer<'_> {
    async fn row(&mut self, row: Row) -> Result<(), ImportError> {
        match row {
            Row::Blank => {}
            Row::Header { code_column } => {
                if code_column.is_none() {
                    return Err(ImportError::NoCodeColumn);
                }
            }
            Row::Code(code) => {
                self.batch.push(code);
                if self.batch.len() >= CODE_BATCH {
                    self.flush().await?;
                }
            }
            Row::Rejected { line, reason } => {
                self.report.rejected_count += 1;
                if self.report.rejected.len() < MAX_LISTED_REJECTIONS {
                    self.report.rejected.push(Rejected { line, reason });
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ImportError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let added = self
            .store
            .add_codes(self.campaign, std::mem::take(&mut self.batch))
            .await
            .map_err(CampaignError::from)?;
        self.report.imported += added.inserted;
        self.report.duplicates += added.duplicates;
        Ok(())
    }
}

/// Imports codes from a stream of byte chunks into the campaign's pool.
/// Batches already written stay written if the import fails halfway.
///
/// # Errors
/// [`ImportError`]: no `code` column (or no header at all), an unreadable
/// upload, an unknown campaign, or a failing store.
pub async fn import_codes<S, E>(
    store: &dyn CouponStore,
    campaign: CampaignId,
    chunks: S,
) -> Result<ImportReport, ImportError>
where
    S: Stream<Item = Result<Vec<u8>, E>>,
    E: Display,
{
    let mut importer = Importer {
        store,
        campaign,
        batch: Vec::with_capacity(CODE_BATCH),
        report: ImportReport::default(),
    };
    let mut rows = CodeRows::new();
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ImportError::Read(e.to_string()))?;
        let mut input = chunk.as_slice();
        while let Some(row) = rows.next_row(&mut input) {
            importer.row(row).await?;
        }
    }
    while let Some(row) = rows.finish() {
        importer.row(row).await?;
    }
    if !rows.header_read() {
        return Err(ImportError::NoCodeColumn);
    }
    importer.flush().await?;
    Ok(importer.report)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use domain::coupon::{AddedCodes, MockCouponStore};
    use futures_util::stream;

    use super::*;

    type Recorded<T> = Arc<Mutex<Vec<T>>>;

    /// A store whose pool already holds `existing`; remembers what it got.
    fn pool(existing: &[&str]) -> (MockCouponStore, Recorded<usize>) {
        let (store, batches, _) = recording_pool(existing);
        (store, batches)
    }

    /// [`pool`], also remembering every code it was given, in order.
    fn recording_pool(existing: &[&str]) -> (MockCouponStore, Recorded<usize>, Recorded<String>) {
        let seen: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(
            existing.iter().map(|s| (*s).to_owned()).collect(),
        ));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&batches);
        let given = Arc::new(Mutex::new(Vec::new()));
        let codes_given = Arc::clone(&given);
        let mut store = MockCouponStore::new();
        store.expect_add_codes().returning(move |_, codes| {
            recorded.lock().expect("lock").push(codes.len());
            codes_given
                .lock()
                .expect("lock")
                .extend(codes.iter().map(|c| c.as_str().to_owned()));
            let mut seen = seen.lock().expect("lock");
            let inserted = codes
                .iter()
                .filter(|c| seen.insert(c.as_str().to_owned()))
                .count();
            Ok(AddedCodes {
                inserted,
                duplicates: codes.len() - inserted,
            })
        });
        (store, batches, given)
    }

    /// The text cut into chunks of `size` bytes, as a network would.
    fn chunks(text: &str, size: usize) -> impl Stream<Item = Result<Vec<u8>, String>> {
        let parts: Vec<Result<Vec<u8>, String>> = text
            .as_bytes()
            .chunks(size)
            .map(|c| Ok(c.to_vec()))
            .collect();
        stream::iter(parts)
    }

    #[tokio::test]
    async fn reports_imports_duplicates_and_rejected_lines_exactly_whatever_the_chunking() {
        let csv =
            "code\r\nAAAA-0001\n\"AAAA-0002\"\naaaa-0001\nbad code\n\nEXISTING-1\nA,B\nAAAA-0003";
        for size in [1, 3, 7, 1_000] {
            let (store, _) = pool(&["EXISTING-1"]);
            let report = import_codes(&store, CampaignId::new(1), chunks(csv, size))
                .await
                .expect("imported");
            assert_eq!(report.imported, 3, "chunk size {size}");
            assert_eq!(report.duplicates, 2, "one within the file, one existing");
            assert_eq!(report.rejected_count, 2);
            assert_eq!(
                report.rejected,
                [
                    Rejected {
                        line: 5,
                        reason: "must be 4 to 64 characters of A-Z, 0-9 or '-'"
                    },
                    Rejected {
                        line: 8,
                        reason: "must be 4 to 64 characters of A-Z, 0-9 or '-'"
                    },
                ]
            );
        }
    }

    #[tokio::test]
    async fn a_file_without_a_code_column_is_refused_before_anything_is_written() {
        for csv in [
            "AAAA-0001\nAAAA-0002\n",
            "codes,note\nAAAA-0001,x\n",
            "note\r\nAAAA-0001\r\n",
            "\u{feff}\n \r\n",
            "",
        ] {
            let mut store = MockCouponStore::new();
            store.expect_add_codes().never();
            let result = import_codes(&store, CampaignId::new(1), chunks(csv, 4)).await;
            assert!(
                matches!(result, Err(ImportError::NoCodeColumn)),
                "{csv:?}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn spreadsheet_exports_import_their_code_column_upper_cased() {
        let plain = "code,note\nsheet-0001,first\nSHEET-0002,second\n";
        let quoted = "note,code\n\"one, two\",sheet-0001\n\"a \"\"quote\"\"\",\"Sheet-0002\"\n";
        let crlf = "code,note\r\nsheet-0001,first\r\nSHEET-0002,second\r\n";
        let bom = "\u{feff}code\nsheet-0001\nSHEET-0002";
        let all = "\u{feff}\"Note\",\"CODE\",when\r\n\"first, \"\"really\"\"\",sheet-0001,2026-01-01\r\n\
                   \"second\r\nof two lines\",\"sheet-0002\",\r\n,,\r\n";
        for (name, csv) in [
            ("plain", plain),
            ("quoted", quoted),
            ("crlf", crlf),
            ("bom", bom),
            ("all", all),
        ] {
            for size in [1, 5, 1_000] {
                let (store, _, codes) = recording_pool(&[]);
                let report = import_codes(&store, CampaignId::new(1), chunks(csv, size))
                    .await
                    .expect("imported");
                assert_eq!(
                    (report.imported, report.rejected_count),
                    (2, 0),
                    "{name}, chunks of {size}: {report:?}"
                );
                assert_eq!(
                    *codes.lock().expect("lock"),
                    ["SHEET-0001", "SHEET-0002"],
                    "{name}"
                );
            }
        }
    }

    #[tokio::test]
    async fn an_overlong_line_is_rejected_without_being_buffered_and_the_rest_imports() {
        let csv = format!("code\n{}\nAAAA-0001\n", "A".repeat(10_000));
        let (store, _) = pool(&[]);
        let report = import_codes(&store, CampaignId::new(1), chunks(&csv, 512))
            .await
            .expect("imported");
        assert_eq!(report.imported, 1);
        assert_eq!(
            report.rejected,
            [Rejected {
                line: 2,
                reason: "line too long"
            }]
        );
    }

    #[tokio::test]
    async fn codes_are_written_in_batches_and_only_the_first_rejections_are_listed() {
        let mut csv = String::from("code\n");
        for i in 0..25_000 {
            csv.push_str(&format!("CODE-{i:08}\n"));
        }
        for _ in 0..1_500 {
            csv.push_str("no\n");
        }
        let (store, batches) = pool(&[]);
        let report = import_codes(&store, CampaignId::new(1), chunks(&csv, 8_192))
            .await
            .expect("imported");
        assert_eq!(report.imported, 25_000);
        assert_eq!(*batches.lock().expect("lock"), [10_000, 10_000, 5_000]);
        assert_eq!(
            (report.rejected.len(), report.rejected_count),
            (1_000, 1_500)
        );
    }
}
