package observe

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
)

// xzStore wraps data in a valid .xz stream without compressing it: one block whose LZMA2
// data is a run of "uncompressed" chunks (LZMA2 control bytes 0x01/0x02), CRC32 checks.
// Python's lzma.decompress, which the Grafana charm uses (cosl.LZMABase64), and xz(1) both
// read it. The standard library has no LZMA encoder and the project takes no module for one;
// a dashboard is a few KiB, and relation data is not size-critical at that scale (base64 of
// the raw JSON is what it costs).
//
// Layout (xz file format 1.0.4): stream header, block header, LZMA2 chunks + end marker,
// block padding, CRC32 of the data, index, stream footer.
func xzStore(data []byte) []byte {
	var out bytes.Buffer
	le32 := func(v uint32) { binary.Write(&out, binary.LittleEndian, v) }
	flags := []byte{0x00, 0x01} // check type 1: CRC32

	// Stream header: magic, flags, CRC32 of the flags.
	out.Write([]byte{0xFD, '7', 'z', 'X', 'Z', 0x00})
	out.Write(flags)
	le32(crc32.ChecksumIEEE(flags))

	// Block header: size ((12/4)-1), block flags (one filter, no sizes), the LZMA2 filter
	// (ID 0x21, one property byte: dictionary size 1 MiB, encoded 16), padding, CRC32.
	hdr := []byte{0x02, 0x00, 0x21, 0x01, 0x10, 0x00, 0x00, 0x00}
	out.Write(hdr)
	le32(crc32.ChecksumIEEE(hdr))
	const blockHeaderSize = 12

	// LZMA2: uncompressed chunks of at most 64 KiB, the first resetting the dictionary.
	start := out.Len()
	for i, rest := 0, data; len(rest) > 0; i++ {
		n := min(len(rest), 1<<16)
		control := byte(0x02)
		if i == 0 {
			control = 0x01
		}
		out.WriteByte(control)
		binary.Write(&out, binary.BigEndian, uint16(n-1))
		out.Write(rest[:n])
		rest = rest[n:]
	}
	out.WriteByte(0x00) // end of LZMA2 data
	compressed := out.Len() - start
	for (out.Len()-start)%4 != 0 { // the header is 12 bytes: pad the data to a multiple of 4
		out.WriteByte(0x00) // block padding
	}
	le32(crc32.ChecksumIEEE(data))

	// Index: indicator, one record (unpadded size, uncompressed size), padding, CRC32.
	var idx bytes.Buffer
	idx.WriteByte(0x00)
	idx.Write(uvarint(1))
	idx.Write(uvarint(uint64(blockHeaderSize + compressed + 4)))
	idx.Write(uvarint(uint64(len(data))))
	for idx.Len()%4 != 0 {
		idx.WriteByte(0x00)
	}
	idxCRC := crc32.ChecksumIEEE(idx.Bytes())
	indexSize := idx.Len() + 4
	out.Write(idx.Bytes())
	le32(idxCRC)

	// Stream footer: CRC32 of (backward size, flags), backward size, flags, magic.
	var ftr bytes.Buffer
	binary.Write(&ftr, binary.LittleEndian, uint32(indexSize/4-1))
	ftr.Write(flags)
	le32(crc32.ChecksumIEEE(ftr.Bytes()))
	out.Write(ftr.Bytes())
	out.Write([]byte{'Y', 'Z'})
	return out.Bytes()
}

// uvarint is xz's multibyte integer: 7 bits a byte, least significant first.
func uvarint(v uint64) []byte {
	var b []byte
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}
