//! Attribute macros of the Sluice Rust SDK. Use them through `sluice-sdk`
//! (`#[sluice_sdk::filter]`, `#[sluice_sdk::map]`, `#[sluice_sdk::process]`),
//! which documents them.

#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Ident, ItemFn, Path, Token, Type};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Filter,
    Map,
    Process,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Filter => "filter",
            Kind::Map => "map",
            Kind::Process => "process",
        }
    }

    fn signature(self) -> &'static str {
        match self {
            Kind::Filter => "fn(record: &Record) -> Result<bool, Error>",
            Kind::Map => "fn(record: Record) -> Result<Record, Error>",
            Kind::Process => "fn(record: Record, ctx: &mut Context) -> Result<(), Error>",
        }
    }

    fn base_args(self) -> usize {
        match self {
            Kind::Filter | Kind::Map => 1,
            Kind::Process => 2,
        }
    }
}

#[derive(Default)]
struct Args {
    params: Option<Type>,
    init: Option<Path>,
}

enum Arg {
    Params(Type),
    Init(Path),
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        match name.to_string().as_str() {
            "params" => Ok(Arg::Params(input.parse()?)),
            "init" => Ok(Arg::Init(input.parse()?)),
            other => Err(syn::Error::new(
                name.span(),
                format!(
                    "unknown argument `{other}`: expected `params = Type` or `init = path::to::fn`"
                ),
            )),
        }
    }
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = Args::default();
        for arg in Punctuated::<Arg, Token![,]>::parse_terminated(input)? {
            match arg {
                Arg::Params(t) if args.params.is_none() => args.params = Some(t),
                Arg::Init(p) if args.init.is_none() => args.init = Some(p),
                Arg::Params(t) => return Err(syn::Error::new_spanned(t, "`params` given twice")),
                Arg::Init(p) => return Err(syn::Error::new_spanned(p, "`init` given twice")),
            }
        }
        Ok(args)
    }
}

fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = match syn::parse::<Args>(attr) {
        Ok(a) => a,
        Err(e) => return e.to_compile_error().into(),
    };
    let func = match syn::parse::<ItemFn>(item) {
        Ok(f) => f,
        Err(e) => return e.to_compile_error().into(),
    };
    match generate(kind, &args, &func) {
        Ok(ts) => ts.into(),
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#func #err).into()
        }
    }
}

fn generate(kind: Kind, args: &Args, func: &ItemFn) -> syn::Result<TokenStream2> {
    let sig = &func.sig;
    let expected = kind.base_args() + usize::from(args.params.is_some());
    if sig.inputs.len() != expected {
        let with_params = if args.params.is_some() {
            ", plus `&P` last for `params = P`"
        } else {
            ""
        };
        return Err(syn::Error::new(
            sig.inputs.span(),
            format!(
                "#[{}] expects `{}`{with_params}: {expected} argument(s), found {}",
                kind.name(),
                kind.signature(),
                sig.inputs.len()
            ),
        ));
    }
    if sig.asyncness.is_some() || !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.span(),
            format!(
                "#[{}] needs a plain, non-async, non-generic function",
                kind.name()
            ),
        ));
    }
    if let Some(syn::FnArg::Receiver(r)) = sig.inputs.first() {
        return Err(syn::Error::new(
            r.span(),
            format!("#[{}] needs a free function, not a method", kind.name()),
        ));
    }

    let name = &sig.ident;
    let sdk = quote!(::sluice_sdk);
    let params_ty = match &args.params {
        Some(t) => quote!(#t),
        None => quote!(()),
    };
    let params_init = match &args.params {
        Some(t) => quote_spanned!(t.span()=> params.deserialize::<#t>()?),
        None => quote!(()),
    };
    let extra = args.params.as_ref().map(|_| quote!(, &self.params));
    let init_hook = args.init.as_ref().map(|init| {
        quote_spanned! {init.span()=>
            if let ::core::result::Result::Err(e) = #init(params) {
                return ::core::result::Result::Err(::core::convert::From::from(e));
            }
        }
    });
    let body = match kind {
        Kind::Filter => quote! {
            match #name(&record #extra) {
                ::core::result::Result::Ok(true) => {
                    ctx.emit(record);
                    ::core::result::Result::Ok(())
                }
                ::core::result::Result::Ok(false) => ::core::result::Result::Ok(()),
                ::core::result::Result::Err(e) => ::core::result::Result::Err(::core::convert::From::from(e)),
            }
        },
        Kind::Map => quote! {
            match #name(record #extra) {
                ::core::result::Result::Ok(out) => {
                    ctx.emit(out);
                    ::core::result::Result::Ok(())
                }
                ::core::result::Result::Err(e) => ::core::result::Result::Err(::core::convert::From::from(e)),
            }
        },
        Kind::Process => quote! {
            match #name(record, ctx #extra) {
                ::core::result::Result::Ok(()) => ::core::result::Result::Ok(()),
                ::core::result::Result::Err(e) => ::core::result::Result::Err(::core::convert::From::from(e)),
            }
        },
    };

    Ok(quote! {
        #func

        #[doc(hidden)]
        pub struct __SluiceOperator {
            #[allow(dead_code)]
            params: #params_ty,
        }

        impl #sdk::__private::Operator for __SluiceOperator {
            #[allow(clippy::useless_conversion)]
            fn init(params: &#sdk::Params) -> ::core::result::Result<Self, #sdk::Error> {
                #init_hook
                ::core::result::Result::Ok(__SluiceOperator { params: #params_init })
            }

            #[inline]
            #[allow(clippy::useless_conversion)]
            fn process(
                &mut self,
                record: #sdk::Record,
                ctx: &mut #sdk::Context<'_>,
            ) -> ::core::result::Result<(), #sdk::Error> {
                #body
            }
        }

        /// The operator defined by this crate, for `sluice_sdk::testing::Harness`.
        #[doc(hidden)]
        pub fn __sluice_operator() -> #sdk::OperatorDef {
            #sdk::OperatorDef::of::<__SluiceOperator>()
        }

        #sdk::__export_operator!(__sluice_operator());
    })
}

/// Define a filter operator. See `sluice_sdk::filter`.
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Filter, attr, item)
}

/// Define a map operator. See `sluice_sdk::map`.
#[proc_macro_attribute]
pub fn map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Map, attr, item)
}

/// Define a process operator. See `sluice_sdk::process`.
#[proc_macro_attribute]
pub fn process(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Process, attr, item)
}
