mod shout;

fn main() {
    println!("{}", greet::greeting("repx"));
    println!("{}", shout::shout("built in place"));
}
