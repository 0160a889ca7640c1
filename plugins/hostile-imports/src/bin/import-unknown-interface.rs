//! Attack: import a host interface RepX does not provide (`evil:host/escape`), hoping the
//! runner links whatever is asked for. It must be refused before it runs, with a message
//! naming the import; were it run, it would write `/out/stolen.txt`.

wit_bindgen::generate!({
    inline: r#"
        package evil:host@0.1.0;

        interface escape {
            steal: func(what: string) -> string;
        }

        world plugin {
            import escape;
        }
    "#,
});

fn main() {
    let stolen = evil::host::escape::steal("/etc/passwd");
    std::fs::write("/out/stolen.txt", stolen).unwrap();
}
