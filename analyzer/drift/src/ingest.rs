//! Reading training data into a [`ProfileBuilder`]: CSV (header row), JSON
//! Lines, either flat rows (`{"amount": 1.5, "country": "DE"}`) or the
//! public event shape (`{"features": {...}, "prediction": {...}}`), and
//! Parquet (flat columns, as pandas and pyarrow write them).
//! Readers take `Read` (Parquet: a [`ChunkReader`]) so they are tested
//! without files; the `mlwatch-profile` binary opens the files.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read};

use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use parquet::record::Field;

use super::DriftError;
use super::profile::{Profile, ProfileBuilder, Value};

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
    Parquet,
}

impl Format {
    /// The format named by a file extension (`.csv`, `.jsonl`, `.ndjson`,
    /// `.json`, `.parquet`, `.pq`).
    pub fn from_path(path: &str) -> Result<Self, DriftError> {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Ok(Self::Csv)
        } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") || lower.ends_with(".json") {
            Ok(Self::JsonLines)
        } else if lower.ends_with(".parquet") || lower.ends_with(".pq") {
            Ok(Self::Parquet)
        } else {
            Err(DriftError::InvalidInput(format!(
                "{path}: cannot tell the format from the extension; use .csv, .jsonl or .parquet, or pass --format"
            )))
        }
    }
}

/// Which columns of a flat file are not features.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    /// Columns ignored (ids, timestamps, labels).
    pub exclude: BTreeSet<String>,
    /// Column → prediction output (`score`, `label`, `value`).
    pub prediction: BTreeMap<String, String>,
}

impl Columns {
    fn add(&self, b: &mut ProfileBuilder, column: &str, value: Value<'_>) {
        if self.exclude.contains(column) {
            return;
        }
        match self.prediction.get(column) {
            Some(output) => b.add_prediction(output, value),
            None => b.add_feature(column, value),
        }
    }
}

/// Reads CSV with a header row into `builder`.
pub fn read_csv(reader: impl Read, columns: &Columns, builder: &mut ProfileBuilder) -> Result<(), DriftError> {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
    let headers = csv
        .headers()
        .map_err(|e| DriftError::InvalidInput(format!("csv header: {e}")))?
        .clone();
    if let Some(dup) = headers
        .iter()
        .enumerate()
        .find_map(|(i, h)| headers.iter().skip(i + 1).find(|x| *x == h))
    {
        return Err(DriftError::InvalidInput(format!(
            "csv header: column {dup:?} appears twice"
        )));
    }
    let mut record = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(DriftError::InvalidInput(format!("csv: {e}"))),
        }
        builder.start_row();
        for (name, cell) in headers.iter().zip(record.iter()) {
            columns.add(builder, name, Value::from_cell(cell));
        }
    }
    Ok(())
}

/// Reads JSON Lines into `builder`; blank lines are skipped.
pub fn read_json_lines(
    reader: impl BufRead,
    columns: &Columns,
    builder: &mut ProfileBuilder,
) -> Result<(), DriftError> {
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| DriftError::InvalidInput(format!("line {n}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| DriftError::InvalidInput(format!("line {n}: {e}")))?;
        let serde_json::Value::Object(row) = row else {
            return Err(DriftError::InvalidInput(format!("line {n}: not a JSON object")));
        };
        builder.start_row();
        if let Some(serde_json::Value::Object(features)) = row.get("features") {
            // The public event shape.
            for (k, v) in features {
                builder.add_feature(k, json_value(n, k, v)?);
            }
            if let Some(serde_json::Value::Object(p)) = row.get("prediction") {
                for (k, v) in p {
                    match (k.as_str(), v) {
                        ("scores", serde_json::Value::Object(scores)) => {
                            for (class, s) in scores {
                                builder.add_prediction(&format!("scores.{class}"), json_value(n, k, s)?);
                            }
                        }
                        ("score" | "label" | "value", v) => builder.add_prediction(k, json_value(n, k, v)?),
                        _ => {}
                    }
                }
            }
        } else {
            for (k, v) in &row {
                columns.add(builder, k, json_value(n, k, v)?);
            }
        }
    }
    Ok(())
}

fn json_value<'a>(line: usize, field: &str, v: &'a serde_json::Value) -> Result<Value<'a>, DriftError> {
    Value::from_json(v).ok_or_else(|| {
        DriftError::InvalidInput(format!(
            "line {line}: field {field:?}: nested values are not feature values"
        ))
    })
}

/// Reads a Parquet file (any codec the build has: uncompressed, snappy,
/// zstd, lz4) into `builder`, row by row with the record API. Flat columns
/// only: numbers (integers, floats, decimals are refused), strings,
/// booleans; nulls and float NaN are missing values. pandas' index columns
/// (`__index_level_N__`) are skipped; nested, binary, date and time columns
/// are refused naming the row and column (`--exclude` them).
pub fn read_parquet<R: ChunkReader + 'static>(
    reader: R,
    columns: &Columns,
    builder: &mut ProfileBuilder,
) -> Result<(), DriftError> {
    // The parquet crate panics on some damaged files (e.g. negative column
    // chunk offsets in the footer); such a file is bad input, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_parquet_rows(reader, columns, builder)
    }))
    .unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unreadable");
        Err(DriftError::InvalidInput(format!("parquet: damaged file: {why}")))
    })
}

fn read_parquet_rows<R: ChunkReader + 'static>(
    reader: R,
    columns: &Columns,
    builder: &mut ProfileBuilder,
) -> Result<(), DriftError> {
    let file = SerializedFileReader::new(reader).map_err(|e| DriftError::InvalidInput(format!("parquet: {e}")))?;
    let rows = file
        .get_row_iter(None)
        .map_err(|e| DriftError::InvalidInput(format!("parquet: {e}")))?;
    for (i, row) in rows.enumerate() {
        let n = i + 1;
        let row = row.map_err(|e| DriftError::InvalidInput(format!("parquet row {n}: {e}")))?;
        builder.start_row();
        for (name, field) in row.get_column_iter() {
            if columns.exclude.contains(name) || name.starts_with("__index_level_") {
                continue;
            }
            let value = parquet_value(field).ok_or_else(|| {
                DriftError::InvalidInput(format!(
                    "parquet row {n}: column {name:?}: {} values are not feature values (exclude the column)",
                    kind(field)
                ))
            })?;
            columns.add(builder, name, value);
        }
    }
    Ok(())
}

/// What a refused Parquet field is, for the error message.
fn kind(field: &Field) -> &'static str {
    match field {
        Field::Decimal(_) => "decimal",
        Field::Bytes(_) => "binary",
        Field::Date(_) => "date",
        Field::TimeMillis(_) | Field::TimeMicros(_) => "time",
        Field::TimestampMillis(_) | Field::TimestampMicros(_) => "timestamp",
        Field::Group(_) => "nested (group)",
        Field::ListInternal(_) => "list",
        Field::MapInternal(_) => "map",
        _ => "these",
    }
}

/// A Parquet field as a feature value; `None` for what is not one.
fn parquet_value(field: &Field) -> Option<Value<'_>> {
    let number = |x: f64| if x.is_nan() { Value::Missing } else { Value::Number(x) };
    Some(match field {
        Field::Null => Value::Missing,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(x) => Value::Number(f64::from(*x)),
        Field::Short(x) => Value::Number(f64::from(*x)),
        Field::Int(x) => Value::Number(f64::from(*x)),
        Field::Long(x) => Value::Number(*x as f64),
        Field::UByte(x) => Value::Number(f64::from(*x)),
        Field::UShort(x) => Value::Number(f64::from(*x)),
        Field::UInt(x) => Value::Number(f64::from(*x)),
        Field::ULong(x) => Value::Number(*x as f64),
        Field::Float16(x) => number(f64::from(*x)),
        Field::Float(x) => number(f64::from(*x)),
        Field::Double(x) => number(*x),
        Field::Str(s) => Value::Text(s),
        _ => return None,
    })
}

/// Reads `reader` in `format` and builds the profile. Parquet needs random
/// access: use [`read_parquet`] with the file (the `mlwatch-profile`
/// binary does); here its bytes are read into memory first.
pub fn build(
    mut reader: impl BufRead,
    format: Format,
    columns: &Columns,
    mut builder: ProfileBuilder,
) -> Result<Profile, DriftError> {
    match format {
        Format::Csv => read_csv(reader, columns, &mut builder)?,
        Format::JsonLines => read_json_lines(reader, columns, &mut builder)?,
        Format::Parquet => {
            let mut data = Vec::new();
            reader
                .read_to_end(&mut data)
                .map_err(|e| DriftError::InvalidInput(format!("parquet: {e}")))?;
            read_parquet(bytes::Bytes::from(data), columns, &mut builder)?;
        }
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;

    use super::*;
    use crate::profile::{BuildOptions, FeatureProfile};

    fn builder() -> ProfileBuilder {
        ProfileBuilder::new(BuildOptions::new("fraud", 3)).unwrap()
    }

    #[test]
    fn csv_with_prediction_and_excluded_columns() {
        let data = "id,amount,country,score\n1,10.5,DE,0.1\n2,,FR,0.9\n3,7,\"D,E\",0.4\n";
        let columns = Columns {
            exclude: ["id".to_string()].into(),
            prediction: [("score".to_string(), "score".to_string())].into(),
        };
        let p = build(data.as_bytes(), Format::Csv, &columns, builder()).unwrap();
        assert_eq!(p.rows, 3);
        assert_eq!(p.version, 3);
        assert!(!p.features.contains_key("id"));
        let FeatureProfile::Numeric(a) = &p.features["amount"] else {
            panic!()
        };
        assert_eq!((a.count, a.missing), (2, 1));
        let FeatureProfile::Categorical(c) = &p.features["country"] else {
            panic!()
        };
        assert_eq!(c.categories["D,E"], 1);
        assert!(p.predictions.contains_key("score"));
    }

    #[test]
    fn json_lines_flat_and_event_shape() {
        let data = r#"{"amount": 1.5, "country": "DE", "is_new": true}

{"features": {"amount": 2.5, "country": null}, "prediction": {"score": 0.3, "label": "1", "scores": {"a": 0.2}}}
"#;
        let p = build(data.as_bytes(), Format::JsonLines, &Columns::default(), builder()).unwrap();
        assert_eq!(p.rows, 2);
        let FeatureProfile::Categorical(c) = &p.features["country"] else {
            panic!()
        };
        assert_eq!((c.count, c.missing), (1, 1));
        assert!(matches!(p.features["is_new"], FeatureProfile::Categorical(_)));
        let outputs: Vec<&str> = p.predictions.keys().map(String::as_str).collect();
        assert_eq!(outputs, ["label", "score", "scores.a"]);
    }

    proptest::proptest! {
        /// Whatever the bytes, the readers and the profile loader answer
        /// with a profile or an error, never a panic.
        #[test]
        fn arbitrary_input_never_panics(text in "(?s).{0,400}", csv in proptest::bool::ANY) {
            let format = if csv { Format::Csv } else { Format::JsonLines };
            let _ = build(text.as_bytes(), format, &Columns::default(), builder());
            let _ = Profile::from_json(&text);
        }

        #[test]
        fn json_shaped_input_never_panics(
            rows in proptest::collection::vec(
                proptest::collection::btree_map("[a-c]{1,2}", proptest::prop_oneof![
                    proptest::num::f64::ANY.prop_map(|x| serde_json::json!(x)),
                    "[a-z]{0,3}".prop_map(|s| serde_json::json!(s)),
                    proptest::bool::ANY.prop_map(|b| serde_json::json!(b)),
                    proptest::strategy::Just(serde_json::Value::Null),
                ], 0..4),
                1..30,
            )
        ) {
            let text: String = rows
                .iter()
                .map(|r| serde_json::to_string(r).unwrap() + "\n")
                .collect();
            if let Ok(p) = build(text.as_bytes(), Format::JsonLines, &Columns::default(), builder()) {
                proptest::prop_assert!(p.validate().is_ok());
                let back = Profile::from_json(&p.to_json());
                proptest::prop_assert!(back.is_ok(), "{:?}", back.err());
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(1000))]
        /// A damaged Parquet file (bytes of the pyarrow fixture overwritten,
        /// half of them in the footer, or cut short) gives an error or a
        /// profile, never a panic.
        #[test]
        fn damaged_parquet_never_panics(
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..8),
            cut in proptest::option::of(proptest::num::usize::ANY),
        ) {
            let mut data = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/parquet/train.snappy.parquet")).unwrap();
            for (i, (at, byte)) in edits.into_iter().enumerate() {
                let n = data.len();
                // Every other edit lands in the footer (schema, row groups).
                let at = if i % 2 == 0 { at % n } else { n - 1 - at % 2000 };
                data[at] = byte;
            }
            if let Some(c) = cut {
                let n = data.len();
                data.truncate(c % n);
            }
            let _ = build(data.as_slice(), Format::Parquet, &Columns::default(), builder());
        }
    }

    #[test]
    fn bad_input_names_the_line_and_field() {
        let err = build(
            "{\"a\": 1}\n{\"a\": [1]}\n".as_bytes(),
            Format::JsonLines,
            &Columns::default(),
            builder(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 2") && err.contains("\"a\""), "{err}");
        let err = build("{oops\n".as_bytes(), Format::JsonLines, &Columns::default(), builder())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
        let err = build("a,b\n1,2,3\n".as_bytes(), Format::Csv, &Columns::default(), builder())
            .unwrap_err()
            .to_string();
        assert!(err.contains("csv"), "{err}");
        assert_eq!(Format::from_path("train.parquet").unwrap(), Format::Parquet);
        let err = build(
            "PAR1 not really".as_bytes(),
            Format::Parquet,
            &Columns::default(),
            builder(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("parquet"), "{err}");
        assert_eq!(Format::from_path("x.JSONL").unwrap(), Format::JsonLines);
        let err = build("".as_bytes(), Format::Csv, &Columns::default(), builder()).unwrap_err();
        assert!(err.to_string().contains("no rows"), "{err}");
    }
}
