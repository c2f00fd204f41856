//! Reading planner nodes.

use pgrx::pg_sys;
use pgrx::FromDatum;

/// The text value of a non-null text Const node.
///
/// # Safety
/// `node` is null or points to a valid Node.
pub unsafe fn const_text(node: *mut pg_sys::Node) -> Option<String> {
    // SAFETY: `node` is null (checked first) or a valid Node, per this function's contract; a Const's datum is read only for a non-null text Const.
    unsafe {
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_Const {
            return None;
        }
        let c = node as *mut pg_sys::Const;
        if (*c).constisnull || (*c).consttype != pg_sys::TEXTOID {
            return None;
        }
        String::from_datum((*c).constvalue, false)
    }
}

/// The n-th element of a pointer List, or null when out of range.
///
/// # Safety
/// `list` is null or points to a valid List of pointers.
pub unsafe fn list_nth(list: *mut pg_sys::List, n: i32) -> *mut pg_sys::Node {
    // SAFETY: `list` is null (checked) or a valid List of pointers, per the contract; `n` is checked against its length.
    unsafe {
        if list.is_null() || n < 0 || n >= (*list).length {
            return std::ptr::null_mut();
        }
        (*(*list).elements.add(n as usize)).ptr_value as *mut pg_sys::Node
    }
}
