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

    public static List<SnapshotInfo> Read(SafeFileHandle handle, Qcow2Header header, ulong fileLength, string path)
    {
        var snapshots = new List<SnapshotInfo>();
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
            snapshots.Add(new SnapshotInfo
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
            });
        }

        return snapshots;
    }

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

            Qcow2Io.ReadExactly(handle, buffer, Position, path);
            Position += (ulong)buffer.Length;
        }

        public void Skip(ulong bytes) => Position += bytes;
    }
}
