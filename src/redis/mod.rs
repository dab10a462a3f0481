pub mod resp;
pub mod scripts;
pub mod sha1;
pub mod url;
