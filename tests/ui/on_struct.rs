use interceptor_runtime::intercept;

#[intercept(monitor)]
struct Service {
    name: String,
}

fn main() {}
