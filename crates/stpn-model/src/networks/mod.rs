//! Networks around a cell: the associative-retrieval network (a cell and a readout of its last
//! output) and the familiarity network (a cell and one sigmoid unit on every step).

pub mod art_net;
pub mod familiarity_net;
