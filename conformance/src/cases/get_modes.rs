//! What get does with a destination: refuses a non-empty one, replaces it atomically, or merges into it.

use super::*;

pub async fn get_refuses_a_non_empty_destination(s: &Subject) {
    let src = s.fresh_dir("src");
    small_tree(&src, "x");
    put(s, &src, "busy").await;
    let dest = s.fresh_dir("dest");
    write_file(&dest, "mine.txt", "keep me");
    let r = s
        .block
        .get_directory(&s.path("busy"), &dest, &GetOptions::default())
        .await;
    assert_eq!(code(r), 6);
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 1);
    assert_eq!(
        fs::read_to_string(dest.join("mine.txt")).unwrap(),
        "keep me"
    );
    // An existing but empty folder is fine.
    let empty = s.fresh_dir("empty");
    fs::create_dir(&empty).unwrap();
    s.block
        .get_directory(&s.path("busy"), &empty, &GetOptions::default())
        .await
        .expect("get into empty dir");
    assert!(empty.join("flow.py").is_file());
}

pub async fn get_replace_makes_the_destination_exactly_the_version(s: &Subject) {
    let src = s.fresh_dir("src");
    small_tree(&src, "r");
    put(s, &src, "rep").await;
    let dest = s.fresh_dir("dest");
    write_file(&dest, "stale.txt", "old");
    write_file(&dest, "flow.py", "old flow");
    s.block
        .get_directory(&s.path("rep"), &dest, &get_opts(GetMode::Replace))
        .await
        .expect("replace");
    assert_eq!(snapshot(&dest), snapshot(&src));
    assert_no_leftovers_beside(&dest);
}

pub async fn get_merge_overwrites_and_keeps_other_files(s: &Subject) {
    let src = s.fresh_dir("src");
    small_tree(&src, "m");
    put(s, &src, "merge").await;
    let dest = s.fresh_dir("dest");
    write_file(&dest, "local-only.txt", "mine");
    write_file(&dest, "flow.py", "old flow");
    s.block
        .get_directory(&s.path("merge"), &dest, &get_opts(GetMode::Merge))
        .await
        .expect("merge");
    assert_eq!(
        fs::read_to_string(dest.join("flow.py")).unwrap(),
        "VERSION = \"m\"\n"
    );
    assert_eq!(
        fs::read_to_string(dest.join("local-only.txt")).unwrap(),
        "mine"
    );
    assert!(dest.join("conf/settings.toml").is_file());
}
