using System.Buffers.Binary;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>Reads the internal snapshot table (qcow2.rst "Snapshots") with every length checked before use.</summary>
internal static class Qcow2SnapshotTable
{
    /// <summary>qemu's QCOW_MAX_SNAPSHOT_EXTRA_DATA.</summary>
    private const uint MaxExtraData = 1024;

    /// <summary>qemu's QCOW_MAX_SNAPSHOTS_SIZE: the whole table may not exceed 64 MiB.</summary>
    private const ulong MaxTableBytes = 64UL * 1024 * 1024;

    public static List<SnapshotInfo> Read(SafeFileHandle handle, Qcow2Header header, ulong fileLength, string path) =>
        ReadEntries(handle, header, fileLength, path).ConvertAll(e => e.Info);

    /// <summary>Reads every entry with its bytes as stored (padding excluded), so a rewrite keeps unknown extra data.</summary>
    public static List<Entry> ReadEntries(SafeFileHandle handle, Qcow2Header header, ulong fileLength, string path)
    {
        var snapshots = new List<Entry>();
        if (header.SnapshotCount == 0)
        {
            return snapshots;
        }

        var reader = new BoundedReader(handle, header.SnapshotsOffset, fileLength, path);
        Span<byte> fixedPart = stackalloc byte[40];
        for (uint i = 0; i < header.SnapshotCount; i++)
        {
            ulong entryStart = reader.Position;
            reader.Read(fixedPart);
            ulong l1Offset = BinaryPrimitives.ReadUInt64BigEndian(fixedPart);
            uint l1Size = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[8..]);
            int idLength = BinaryPrimitives.ReadUInt16BigEndian(fixedPart[12..]);
            int nameLength = BinaryPrimitives.ReadUInt16BigEndian(fixedPart[14..]);
            uint dateSeconds = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[16..]);
            uint dateNanoseconds = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[20..]);
            ulong vmClock = BinaryPrimitives.ReadUInt64BigEndian(fixedPart[24..]);
            uint vmStateSize32 = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[32..]);
            uint extraSize = BinaryPrimitives.ReadUInt32BigEndian(fixedPart[36..]);
            if (extraSize > MaxExtraData)
            {
                throw ImageErrors.Invalid(ImageErrorIds.InvalidSnapshotTable, path, $"snapshot {i} has {extraSize} bytes of extra data (limit {MaxExtraData}).");
            }

            byte[] extra = new byte[extraSize];
            reader.Read(extra);
            byte[] id = new byte[idLength];
            reader.Read(id);
            byte[] name = new byte[nameLength];
            reader.Read(name);
            ulong entryLength = reader.Position - entryStart;
            reader.Skip((8 - ((reader.Position - entryStart) % 8)) % 8);
            if (reader.Position - header.SnapshotsOffset > MaxTableBytes)
            {
                throw ImageErrors.Invalid(ImageErrorIds.InvalidSnapshotTable, path, "the snapshot table exceeds qemu's 64 MiB limit.");
            }

            if ((ulong)l1Size * 8 > Qcow2Header.MaxL1Bytes)
            {
                throw ImageErrors.Invalid(ImageErrorIds.InvalidSnapshotTable, path, $"snapshot {i} has an L1 table of {l1Size} entries, over qemu's limit.");
            }

            ulong vmStateSize = extraSize >= 8 ? BinaryPrimitives.ReadUInt64BigEndian(extra) : vmStateSize32;
            ulong? diskSize = extraSize >= 16 ? BinaryPrimitives.ReadUInt64BigEndian(extra.AsSpan(8)) : null;
            long? icount = extraSize >= 24 ? BinaryPrimitives.ReadInt64BigEndian(extra.AsSpan(16)) : null;
            var info = new SnapshotInfo
            {
                Id = Encoding.UTF8.GetString(id),
                Name = Encoding.UTF8.GetString(name),
                VmStateSize = vmStateSize,
                DateSeconds = dateSeconds,
                DateNanoseconds = dateNanoseconds,
                Date = DateTimeOffset.FromUnixTimeSeconds(dateSeconds).AddTicks(dateNanoseconds / 100),
                VmClockNanoseconds = vmClock,
                DiskSize = diskSize,
                Icount = icount is null or -1 ? null : icount,
                L1TableOffset = l1Offset,
                L1Size = l1Size,
            };
            snapshots.Add(new Entry(info, ImageIo.ReadBytes(handle, entryStart, (int)entryLength, path)));
        }

        return snapshots;
    }

    /// <summary>Bytes one table of <paramref name="entries"/> takes (each entry padded to 8 bytes, as qcow2.rst requires).</summary>
    public static ulong TableLength(IEnumerable<byte[]> entries) => entries.Aggregate(0UL, (sum, e) => sum + (((ulong)e.Length + 7) & ~7UL));

    /// <summary>Serialises a snapshot table: each entry at an 8-byte boundary.</summary>
    public static byte[] Serialize(IReadOnlyList<byte[]> entries, ulong clusterSize)
    {
        ulong length = TableLength(entries);
        byte[] table = new byte[Qcow2Layout.CeilDiv(Math.Max(length, 1), clusterSize) * clusterSize];
        int offset = 0;
        foreach (byte[] entry in entries)
        {
            entry.CopyTo(table, offset);
            offset += (entry.Length + 7) & ~7;
        }

        return table;
    }

    /// <summary>
    /// Encodes a new entry as qemu 7.2 does for both compat levels: 24 bytes of extra data (64-bit VM state
    /// size, virtual disk size, icount), which qcow2.rst requires up to byte 55 in v3 and lets v2 readers ignore.
    /// </summary>
    public static byte[] Encode(ulong l1Offset, uint l1Size, string id, string name, uint dateSeconds, uint dateNanoseconds, ulong vmClock, ulong diskSize, long icount)
    {
        byte[] idBytes = Encoding.UTF8.GetBytes(id);
        byte[] nameBytes = Encoding.UTF8.GetBytes(name);
        const int extraLength = 24;
        byte[] entry = new byte[40 + extraLength + idBytes.Length + nameBytes.Length];
        Span<byte> s = entry;
        BinaryPrimitives.WriteUInt64BigEndian(s, l1Offset);
        BinaryPrimitives.WriteUInt32BigEndian(s[8..], l1Size);
        BinaryPrimitives.WriteUInt16BigEndian(s[12..], (ushort)idBytes.Length);
        BinaryPrimitives.WriteUInt16BigEndian(s[14..], (ushort)nameBytes.Length);
        BinaryPrimitives.WriteUInt32BigEndian(s[16..], dateSeconds);
        BinaryPrimitives.WriteUInt32BigEndian(s[20..], dateNanoseconds);
        BinaryPrimitives.WriteUInt64BigEndian(s[24..], vmClock);

        // The 32-bit VM state size (bytes 32..35) stays 0: no VM state is saved.
        BinaryPrimitives.WriteUInt32BigEndian(s[36..], extraLength);
        BinaryPrimitives.WriteUInt64BigEndian(s[48..], diskSize);
        BinaryPrimitives.WriteInt64BigEndian(s[56..], icount);
        idBytes.CopyTo(s[64..]);
        nameBytes.CopyTo(s[(64 + idBytes.Length)..]);
        return entry;
    }

    /// <summary>One entry: what it says, and its bytes as stored.</summary>
    public sealed record Entry(SnapshotInfo Info, byte[] Bytes);

    /// <summary>Sequential reads that never pass the end of the file.</summary>
    private sealed class BoundedReader(SafeFileHandle handle, ulong start, ulong fileLength, string path)
    {
        public ulong Position { get; private set; } = start;

        public void Read(Span<byte> buffer)
        {
            if (buffer.Length == 0)
            {
                return;
            }

            if (Position > fileLength || (ulong)buffer.Length > fileLength - Position)
            {
                throw ImageErrors.Invalid(ImageErrorIds.InvalidSnapshotTable, path, "the snapshot table runs past the end of the file.");
            }

            ImageIo.ReadExactly(handle, buffer, Position, path);
            Position += (ulong)buffer.Length;
        }

        public void Skip(ulong bytes) => Position += bytes;
    }
}
