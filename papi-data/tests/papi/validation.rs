//! Every validation case gets a clear error naming the file, row and column.

use std::path::Path;

use papi_data::{Error, Inventory, Split, read_records, write_records};
use serde_json::{Value, json};

use crate::common::{item_key_csv, population, write};

/// Sets one CSV cell (1-based data row, column by header name).
fn set_csv_cell(text: &str, row: usize, column: &str, value: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let col = lines[0].split(',').position(|h| h == column).expect("column");
    let mut cells: Vec<String> = lines[row].split(',').map(str::to_owned).collect();
    cells[col] = value.to_owned();
    lines[row] = cells.join(",");
    lines.join("\n") + "\n"
}

/// Records as a JSON array of objects, like papi-dev-200.json.
fn json_records(subjects: &[papi_data::Subject]) -> Vec<Value> {
    subjects
        .iter()
        .map(|s| {
            let mut o = serde_json::Map::new();
            o.insert("case".into(), json!(s.case));
            o.insert("country".into(), json!(s.demographics.country));
            for (j, v) in s.answers.iter().enumerate() {
                o.insert(format!("i{}", j + 1), json!(v));
            }
            Value::Object(o)
        })
        .collect()
}

fn csv_with_subjects(dir: &Path, n: usize) -> (Inventory, String) {
    let (inv, subjects) = population(n, 7);
    let p = dir.join("r.csv");
    write_records(&p, &subjects).expect("write");
    (inv, std::fs::read_to_string(p).expect("read"))
}

#[test]
fn non_integer_answer_in_csv_names_row_case_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let (inv, text) = csv_with_subjects(tmp.path(), 4);
    for bad in ["3.5", "x", ""] {
        let p = write(tmp.path(), "bad.csv", set_csv_cell(&text, 3, "i17", bad));
        match read_records(&p, &inv) {
            Err(Error::Record { row, case, column, path, .. }) => {
                assert_eq!((row, case.as_str(), column.as_str()), (3, "3", "i17"), "{bad:?}");
                assert_eq!(path, p);
            }
            other => panic!("{bad:?}: expected a record error, got {other:?}"),
        }
    }
}

#[test]
fn csv_error_names_the_value_it_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (inv, text) = csv_with_subjects(tmp.path(), 4);
    for (bad, says) in [("3.5", "3.5 is not an integer answer 0..5"), ("x", "x is not an integer answer 0..5"), ("\"2,5\"", "2,5 is not an integer answer 0..5"), ("", "empty cell")] {
        let p = write(tmp.path(), "bad.csv", set_csv_cell(&text, 3, "i17", bad));
        let msg = read_records(&p, &inv).expect_err("must fail").to_string();
        assert!(msg.contains(says) && msg.contains("row 3") && msg.contains("`i17`"), "{bad:?}: {msg}");
    }
}

#[test]
fn non_integer_answer_in_json_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (inv, subjects) = population(3, 1);
    for bad in [json!("x"), json!(2.5), json!(null)] {
        let mut rows = json_records(&subjects);
        rows[1]["i42"] = bad.clone();
        let p = write(tmp.path(), "bad.json", serde_json::to_vec(&rows).unwrap());
        let err = read_records(&p, &inv).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("i42") && msg.contains("row 2") && msg.contains("case 2"), "{bad}: {msg}");
    }
}

#[test]
fn out_of_range_answers_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (inv, text) = csv_with_subjects(tmp.path(), 3);
    for bad in ["6", "-1", "300"] {
        let p = write(tmp.path(), "bad.csv", set_csv_cell(&text, 2, "i300", bad));
        let err = read_records(&p, &inv).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("row 2") && msg.contains("`i300`") && msg.contains(bad), "{msg}");
        assert!(msg.contains("out of range"), "{msg}");
    }
}

#[test]
fn missing_item_column_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (inv, subjects) = population(2, 1);
    let mut rows = json_records(&subjects);
    for r in &mut rows {
        r.as_object_mut().unwrap().remove("i123");
    }
    let p = write(tmp.path(), "r.json", serde_json::to_vec(&rows).unwrap());
    match read_records(&p, &inv) {
        Err(Error::MissingColumn { column, .. }) => assert_eq!(column, "i123"),
        other => panic!("expected a missing column, got {other:?}"),
    }
}

#[test]
fn duplicate_case_ids_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (inv, text) = csv_with_subjects(tmp.path(), 5);
    let p = write(tmp.path(), "dup.csv", set_csv_cell(&text, 4, "case", "2"));
    match read_records(&p, &inv) {
        Err(Error::DuplicateCase { case, first_row, row, .. }) => assert_eq!((case, first_row, row), (2, 2, 4)),
        other => panic!("expected a duplicate case, got {other:?}"),
    }
}

#[test]
fn split_naming_unknown_items_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = Inventory::synthetic();
    let p = write(tmp.path(), "split.json", r#"{"train_index": [1, 2, 3], "test_index": [4, 301]}"#);
    let msg = Split::load(&p, &inv).expect_err("unknown item").to_string();
    assert!(msg.contains("test_index[1]") || msg.contains("test[1]"), "{msg}");
    assert!(msg.contains("301"), "{msg}");
    let overlap = write(tmp.path(), "overlap.json", r#"{"train_index": [1, 2], "test_index": [2, 3]}"#);
    assert!(Split::load(&overlap, &inv).expect_err("overlap").to_string().contains("both"));
    let shape = write(tmp.path(), "shape.json", r#"{"train": [1]}"#);
    assert!(Split::load(&shape, &inv).expect_err("shape").to_string().contains("train_index"));
    assert!(Split::new(vec![1], vec![0], &inv).is_err(), "item 0 does not exist");
}

#[test]
fn item_key_with_unknown_domain_or_bad_sign_names_the_row() {
    let tmp = tempfile::tempdir().unwrap();
    let good = item_key_csv(&Inventory::synthetic());
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    // Row 5 (data row 5 = line index 5): unknown domain in Key.
    let mut bad_domain = lines.clone();
    let cells: Vec<&str> = lines[5].split(',').collect();
    bad_domain[5] = format!("{},{},{},X1,{},{}", cells[0], cells[1], cells[2], cells[4], cells[5..].join(","));
    let p = write(tmp.path(), "key.csv", bad_domain.join("\n"));
    match Inventory::load(&p) {
        Err(Error::ItemKey { row, column, value, .. }) => assert_eq!((row, column, value.as_str()), (5, "Key", "X1")),
        other => panic!("expected an item key error, got {other:?}"),
    }
    for bad_sign in ["*", "+", "N1", "+Q1"] {
        let cells: Vec<String> = lines[7].split(',').map(str::to_owned).collect();
        let mut row = cells.clone();
        row[2] = if bad_sign == "N1" { cells[3].clone() } else if bad_sign == "*" { format!("*{}", cells[3]) } else { bad_sign.to_owned() };
        lines[7] = row.join(",");
        let p = write(tmp.path(), "key.csv", lines.join("\n"));
        match Inventory::load(&p) {
            Err(Error::ItemKey { row, column, .. }) => assert_eq!((row, column), (7, "Sign"), "{bad_sign}"),
            other => panic!("{bad_sign}: expected an item key error, got {other:?}"),
        }
        lines[7] = cells.join(",");
    }
    let round_trip = write(tmp.path(), "ok.csv", good);
    assert_eq!(Inventory::load(round_trip).expect("valid key"), Inventory::synthetic());
}

#[test]
fn empty_files_are_reported_as_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = Inventory::synthetic();
    for name in ["r.json", "r.csv", "r.parquet"] {
        let p = write(tmp.path(), name, "");
        assert!(matches!(read_records(&p, &inv), Err(Error::Empty { .. })), "{name}");
    }
    let p = write(tmp.path(), "blank.json", "  \n");
    assert!(matches!(read_records(&p, &inv), Err(Error::Empty { .. })));
    let p = write(tmp.path(), "none.json", "[]");
    assert!(matches!(read_records(&p, &inv), Err(Error::Empty { .. })));
    let header_only = format!("case,{}\n", (1..=300).map(|i| format!("i{i}")).collect::<Vec<_>>().join(","));
    let p = write(tmp.path(), "header.csv", header_only);
    assert!(matches!(read_records(&p, &inv), Err(Error::Empty { .. })));
    let p = write(tmp.path(), "key.csv", "");
    assert!(matches!(Inventory::load(&p), Err(Error::Empty { .. })));
    let p = write(tmp.path(), "key2.csv", "Full#,Short#,Sign,Key,Facet,Item\n");
    assert!(matches!(Inventory::load(&p), Err(Error::Empty { .. })));
    let p = write(tmp.path(), "split.json", "");
    assert!(matches!(Split::load(&p, &inv), Err(Error::Empty { .. })));
}

#[test]
fn wrong_json_shape_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let inv = Inventory::synthetic();
    for (text, found) in [(r#"{"case": 1}"#, "an object"), ("[1, 2, 3]", "an array of a number"), ("\"x\"", "a string"), ("[[1]]", "an array of an array")] {
        let p = write(tmp.path(), "r.json", text);
        match read_records(&p, &inv) {
            Err(Error::JsonShape { found: f, .. }) => assert_eq!(f, found),
            other => panic!("{text}: expected a shape error, got {other:?}"),
        }
    }
    let p = write(tmp.path(), "r.json", "[{\"case\": 1,");
    assert!(matches!(read_records(&p, &inv), Err(Error::Malformed { .. })));
}

#[test]
fn unsupported_extension_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "r.txt", "case\n1\n");
    assert!(matches!(read_records(&p, &Inventory::synthetic()), Err(Error::UnsupportedFormat { .. })));
}
