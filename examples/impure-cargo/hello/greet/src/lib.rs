//! A path dependency: an edit of `hello` does not rebuild it.

pub fn greeting(name: &str) -> String {
    format!("Hello, {name}")
}
