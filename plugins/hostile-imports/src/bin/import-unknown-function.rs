//! Attack: import a function RepX's own interface does not have (`repx:stage/host` with an
//! `escalate` function), hoping a known interface name is enough. It must be refused before
//! it runs, with a message naming the function; were it run, it would write
//! `/out/escalated.txt`.

wit_bindgen::generate!({
    inline: r#"
        package repx:stage@0.1.0;

        interface host {
            escalate: func() -> s32;
        }

        world plugin {
            import host;
        }
    "#,
});

fn main() {
    let level = repx::stage::host::escalate();
    std::fs::write("/out/escalated.txt", level.to_string()).unwrap();
}
