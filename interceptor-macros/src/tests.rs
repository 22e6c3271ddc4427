//! Expansion snapshots: what `cargo expand` shows for each RPC kind and
//! position, kept short and readable. Review a change with `cargo insta review`
//! (or `INSTA_UPDATE=always cargo test -p interceptor-macros` and `git diff`).

use proc_macro2::TokenStream;
use quote::quote;

fn expand(args: TokenStream, item: TokenStream) -> String {
    let tokens = crate::expand::intercept(args, item).unwrap_or_else(|e| e.to_compile_error());
    let file: syn::File = syn::parse2(tokens).expect("the expansion parses as items");
    prettyplease::unparse(&file)
}

macro_rules! snapshot {
    ($expansion:expr) => {
        insta::with_settings!({ omit_expression => true, prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!($expansion);
        })
    };
}

#[test]
fn impl_position_all_kinds() {
    snapshot!(expand(
        quote!(monitor),
        quote! {
            #[tonic::async_trait]
            impl route_guide_server::RouteGuide for Guide {
                async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
                    Ok(Response::new(Feature::default()))
                }

                type ListFeaturesStream = ReceiverStream<Result<Feature, Status>>;

                async fn list_features(&self, request: Request<Rectangle>)
                    -> Result<Response<Self::ListFeaturesStream>, Status> {
                    let (tx, rx) = mpsc::channel(4);
                    Ok(Response::new(ReceiverStream::new(rx)))
                }

                #[intercept(budget(messages = 1000, duration = "30s"))]
                async fn record_route(&self, request: Request<Streaming<Point>>)
                    -> Result<Response<RouteSummary>, Status> {
                    let mut stream = request.into_inner();
                    while let Some(point) = stream.message().await? {}
                    Ok(Response::new(RouteSummary::default()))
                }

                type RouteChatStream = Pin<Box<dyn Stream<Item = Result<RouteNote, Status>> + Send + 'static>>;

                #[intercept(rate = 10)]
                async fn route_chat(&self, request: Request<Streaming<RouteNote>>)
                    -> Result<Response<Self::RouteChatStream>, Status> {
                    Ok(Response::new(Box::pin(request.into_inner()) as Self::RouteChatStream))
                }
            }
        }
    ));
}

/// What `#[tonic::async_trait]` hands an attribute written below it.
#[test]
fn method_position_unary_after_async_trait() {
    snapshot!(
        (expand(
            quote!(monitor, service = "routeguide.RouteGuide"),
            quote! {
                fn get_feature<'life0, 'async_trait>(&'life0 self, request: Request<Point>)
                    -> ::core::pin::Pin<Box<dyn ::core::future::Future<Output = Result<Response<Feature>, Status>>
                        + ::core::marker::Send + 'async_trait>>
                where
                    'life0: 'async_trait,
                    Self: 'async_trait,
                {
                    Box::pin(async move {
                        if let ::core::option::Option::Some(__ret) = ::core::option::Option::None::<Result<Response<Feature>, Status>> {
                            #[allow(unreachable_code)]
                            return __ret;
                        }
                        let __self = self;
                        let request = request;
                        let __ret: Result<Response<Feature>, Status> = {
                            Ok(Response::new(Feature::default()))
                        };
                        #[allow(unreachable_code)]
                        __ret
                    })
                }
            }
        ))
    );
}

#[test]
fn method_position_bidi_after_async_trait() {
    snapshot!(
        (expand(
            quote!(monitor, rate(recv = 100, send = 50, on_exceed = reject)),
            quote! {
                fn route_chat<'life0, 'async_trait>(&'life0 self, request: Request<Streaming<RouteNote>>)
                    -> ::core::pin::Pin<Box<dyn ::core::future::Future<Output = Result<Response<Self::RouteChatStream>, Status>>
                        + ::core::marker::Send + 'async_trait>>
                where
                    'life0: 'async_trait,
                    Self: 'async_trait,
                {
                    Box::pin(async move {
                        if let ::core::option::Option::Some(__ret) = ::core::option::Option::None::<Result<Response<Self::RouteChatStream>, Status>> {
                            #[allow(unreachable_code)]
                            return __ret;
                        }
                        let __self = self;
                        let request = request;
                        let __ret: Result<Response<Self::RouteChatStream>, Status> = {
                            Ok(Response::new(Box::pin(request.into_inner()) as Self::RouteChatStream))
                        };
                        #[allow(unreachable_code)]
                        __ret
                    })
                }
            }
        ))
    );
}

/// A trait with native `async fn` methods: the attribute alone on the method.
#[test]
fn method_position_server_streaming_async_fn() {
    snapshot!(
        (expand(
            quote!(monitor(warn_size = "1MiB")),
            quote! {
                async fn list_features(&self, request: Request<Rectangle>)
                    -> Result<Response<Self::ListFeaturesStream>, Status> {
                    let (tx, rx) = mpsc::channel(4);
                    Ok(Response::new(ReceiverStream::new(rx)))
                }
            }
        ))
    );
}

#[test]
fn method_position_client_streaming_with_user_interceptor() {
    snapshot!(
        (expand(
            quote!(budget = 100, with = AuthCheck::new("secret"), monitor),
            quote! {
                async fn record_route(&self, request: Request<Streaming<Point>>)
                    -> Result<Response<RouteSummary>, Status> {
                    let mut stream = request.into_inner();
                    while let Some(point) = stream.message().await? {}
                    Ok(Response::new(RouteSummary::default()))
                }
            }
        ))
    );
}

/// Malformed arguments and items give a compile error, never a panic. (A
/// request or return type that is not tonic's is the compiler's error, at
/// that type: `tests/ui/not_a_handler.rs`.)
#[test]
fn bad_input_is_an_error_not_a_panic() {
    let handler = quote!(
        async fn f(&self, request: Request<()>) -> Result<Response<()>, Status> {
            todo!()
        }
    );
    let bad_args = [
        quote!(rate =),
        quote!(rate = -1),
        quote!(rate = 99999999999999999999999),
        quote!(rate(recv = 0)),
        quote!(rate(scope = method)),
        quote!(budget()),
        quote!(budget(bytes = "")),
        quote!(budget(duration = "0s")),
        quote!(budget(idle = "forever")),
        quote!(budget(messages = 1,, bytes = 2)),
        quote!(monitor(warn_size)),
        quote!(monitor = 3),
        quote!(with),
        quote!(with =),
        quote!(service),
        quote!(, monitor),
        quote!(monitor monitor),
        quote!("monitor"),
        quote!(42),
        quote!(r#type),
    ];
    for args in bad_args {
        let shown = args.to_string();
        let result = std::panic::catch_unwind(|| crate::expand::intercept(args, handler.clone()).map(|_| ()));
        match result {
            Ok(Err(_)) => {}
            Ok(Ok(())) => panic!("`{shown}` was accepted"),
            Err(_) => panic!("`{shown}` panicked"),
        }
    }
    let bad_items = [
        quote!(),
        quote!(
            struct S;
        ),
        quote!(
            fn f() {}
        ),
        quote!(
            async fn f() {}
        ),
        quote!(
            async fn f(&self) -> u32 {
                1
            }
        ),
        quote!(
            async fn f(&self, a: u32, b: u32) -> Result<Response<()>, Status> {
                todo!()
            }
        ),
        quote!(
            async fn f(request: Request<()>) -> Result<Response<()>, Status> {
                todo!()
            }
        ),
        quote!(
            fn f(&self, request: Request<()>) -> Pin<Box<dyn Future<Output = u32>>> {
                Box::pin(async move { 1 })
            }
        ),
        quote!(
            fn f(&self, request: Request<()>) -> Pin<Box<dyn Future<Output = Result<Response<()>, Status>>>> {
                1
            }
        ),
        quote!(impl S {}),
        quote!(impl T for S { fn helper(&self) {} }),
        quote!(
            trait T {}
        ),
        quote!(
            mod m {}
        ),
    ];
    for item in bad_items {
        let shown = item.to_string();
        let result = std::panic::catch_unwind(|| crate::expand::intercept(quote!(monitor), item).map(|_| ()));
        match result {
            Ok(Err(_)) => {}
            Ok(Ok(())) => panic!("`{shown}` was accepted"),
            Err(_) => panic!("`{shown}` panicked"),
        }
    }
}

/// tonic's interop server's shape: aliases, a boxed stream alias named as
/// `Self::FullDuplexCallStream` in the body, and a method's option under
/// `cfg_attr` (expanded once per condition).
#[test]
fn impl_position_aliases_and_cfg_attr() {
    snapshot!(expand(
        quote!(monitor),
        quote! {
            #[tonic::async_trait]
            impl pb::test_service_server::TestService for TestService {
                type FullDuplexCallStream = Stream<StreamingOutputCallResponse>;

                #[cfg_attr(feature = "limits", intercept(rate = 5), doc = "Echoes.")]
                async fn full_duplex_call(
                    &self,
                    req: Streaming<StreamingOutputCallRequest>,
                ) -> Result<Self::FullDuplexCallStream> {
                    let stream = try_stream! { yield reply() };
                    Ok(Response::new(Box::pin(stream) as Self::FullDuplexCallStream))
                }
            }
        }
    ));
}

/// Option values given as expressions: once per method, or per call when
/// they mention `self`.
#[test]
fn method_position_option_expressions() {
    snapshot!(expand(
        quote!(rate = self.limits.chat, budget(bytes = MAX_BYTES, duration = *TIMEOUT), with = self.auth.clone()),
        quote! {
            async fn record_route(&self, request: Request<Streaming<Point>>) -> tonic::Result<Response<RouteSummary>> {
                Ok(Response::new(RouteSummary::default()))
            }
        }
    ));
}

/// Limits per key and through a backend: `key = metadata(..)` converted
/// once per method, `key_fn` built as a `KeyFn` named as written, a backend
/// that mentions `self` evaluated per call.
#[test]
fn method_position_keyed_limits() {
    snapshot!(expand(
        quote!(
            rate(recv = 100, key = metadata("x-api-key"), backend = self.redis.clone(), on_backend_error = reject),
            budget(streams = 4, key_fn = tenant_of, on_missing_key = unauthenticated),
        ),
        quote! {
            async fn record_route(&self, request: Request<Streaming<Point>>) -> tonic::Result<Response<RouteSummary>> {
                Ok(Response::new(RouteSummary::default()))
            }
        }
    ));
}

/// A body expanded already (an `#[intercept]` the impl's did not recognise)
/// is an error, not a second interception.
#[test]
fn an_expanded_handler_is_not_expanded_again() {
    let handler = quote! {
        async fn get(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
            Ok(Response::new(Feature::default()))
        }
    };
    let once = crate::expand::intercept(quote!(monitor), handler).expect("expands");
    let twice = crate::expand::intercept(quote!(rate = 5), once).map(|_| ()).unwrap_err();
    assert!(twice.to_string().contains("already intercepted"), "{twice}");
}

/// In an impl, a response stream written as its type rather than
/// `Self::XStream` would no longer match the trait once the type is wrapped:
/// the signature is rewritten to name `Self::XStream`, the stream type named
/// after the method.
#[test]
fn a_stream_type_written_out_in_an_impl_is_named_as_the_trait_names_it() {
    let expanded = crate::expand::intercept(
        quote!(monitor),
        quote! {
            #[tonic::async_trait]
            impl route_guide_server::RouteGuide for Guide {
                type ListFeaturesStream = ReceiverStream<Result<Feature, Status>>;
                type RouteChatStream = ResponseStream;
                async fn list_features(&self, request: Request<Rectangle>)
                    -> Result<Response<ReceiverStream<Result<Feature, Status>>>, Status> {
                    unimplemented!()
                }
                async fn route_chat(&self, request: Request<Streaming<RouteNote>>) -> ChatResult<ResponseStream> {
                    unimplemented!()
                }
            }
        },
    )
    .expect("it expands")
    .to_string()
    .replace(' ', "");
    assert!(expanded.contains("->Result<Response<Self::ListFeaturesStream>,Status>"), "{expanded}");
    assert!(expanded.contains("->ChatResult<Self::RouteChatStream>"), "{expanded}");
    assert!(expanded.contains("typeRouteChatStream=::interceptor_runtime::Outbound<ResponseStream>"), "{expanded}");
}

/// A stream type written out in a handler that has no stream type of its
/// name is an error that says what to write.
#[test]
fn a_stream_type_written_out_for_another_method_is_an_error() {
    let error = crate::expand::intercept(
        quote!(monitor),
        quote! {
            #[tonic::async_trait]
            impl route_guide_server::RouteGuide for Guide {
                type ListFeaturesStream = ReceiverStream<Result<Feature, Status>>;
                async fn list_all(&self, request: Request<Rectangle>)
                    -> Result<Response<ReceiverStream<Result<Feature, Status>>>, Status> {
                    unimplemented!()
                }
            }
        },
    )
    .map(|_| ())
    .unwrap_err();
    assert!(error.to_string().contains("write the response stream as `Self::ListFeaturesStream`"), "{error}");
}

/// A stream type the user wrapped already (`Outbound<S>`) is left as it is,
/// written out in a signature too, whatever the method's name.
#[test]
fn an_outbound_stream_type_written_out_is_left_alone() {
    let expanded = crate::expand::intercept(
        quote!(monitor),
        quote! {
            #[tonic::async_trait]
            impl route_guide_server::RouteGuide for Guide {
                type ListFeaturesStream = Outbound<ReceiverStream<Result<Feature, Status>>>;
                async fn list_all(&self, request: Request<Rectangle>)
                    -> Result<Response<Outbound<ReceiverStream<Result<Feature, Status>>>>, Status> {
                    unimplemented!()
                }
            }
        },
    )
    .expect("it expands")
    .to_string()
    .replace(' ', "");
    assert!(
        expanded.contains("->Result<Response<Outbound<ReceiverStream<Result<Feature,Status>>>>,Status>"),
        "{expanded}"
    );
}

/// A stream type's name inside another name, or the tail of a path, is not
/// that type written out.
#[test]
fn a_stream_type_named_inside_another_is_not_written_out() {
    let expanded = crate::expand::intercept(
        quote!(monitor),
        quote! {
            #[tonic::async_trait]
            impl echo_server::Echo for MyEcho {
                type ChatStream = Chat;
                async fn chat(&self, request: Request<Streaming<Note>>) -> Result<Response<Self::ChatStream>, Status> {
                    unimplemented!()
                }
                async fn get(&self, request: Request<Note>) -> Result<Response<pb::Chat>, Status> {
                    unimplemented!()
                }
            }
        },
    );
    assert!(expanded.is_ok(), "{}", expanded.unwrap_err());
}

/// `otel` runs first wherever it is written, so that its span covers what
/// the others reject; the rest keep the order written.
#[test]
fn otel_runs_first_wherever_written() {
    let expanded = expand(
        quote!(monitor, with = Auth, otel),
        quote! {
            async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
                Ok(Response::new(Feature::default()))
            }
        },
    );
    let at = |needle: &str| expanded.find(needle).unwrap_or_else(|| panic!("no `{needle}` in:\n{expanded}"));
    assert!(at("Otel::new") < at("Monitor::new"), "{expanded}");
    assert!(at("Monitor::new") < at("Auth"), "{expanded}");
}
