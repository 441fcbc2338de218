//! Compiles the Slint UI (ui/app.slint and the pages it imports).
fn main() {
    slint_build::compile("ui/app.slint").expect("the Slint UI compiles");
}
