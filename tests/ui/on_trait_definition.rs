use interceptor_runtime::intercept;

#[intercept(monitor)]
trait Service {
    fn call(&self);
}

fn main() {}
