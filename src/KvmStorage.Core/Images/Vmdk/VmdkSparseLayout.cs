using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vmdk;

/// <summary>
/// Where qemu's vmdk driver puts the metadata of a new hosted sparse extent (block/vmdk.c, <c>vmdk_init_extent</c>), in
/// sectors: the header at 0, the embedded descriptor from 1, the redundant grain directory with all its grain tables, the
/// primary grain directory with all its grain tables, then the grains from the next grain boundary. Grains are 64 KiB and
/// a grain table has 512 entries, qemu's defaults; both the monolithicSparse and the streamOptimized writers use it.
/// </summary>
internal sealed class VmdkSparseLayout
{
    public const ulong GrainSectors = 128;
    public const uint GtesPerGt = 512;
    public const ulong DescriptorSectors = 20;

    public VmdkSparseLayout(ulong capacity)
    {
        Capacity = capacity;
        ulong grains = (capacity + GrainSectors - 1) / GrainSectors;
        GtSectors = ((GtesPerGt * 4) + 511) / 512;
        GtCount = (grains + GtesPerGt - 1) / GtesPerGt;
        GdSectors = ((GtCount * 4) + 511) / 512;
        RedundantGdOffset = 1 + DescriptorSectors;
        GdOffset = RedundantGdOffset + GdSectors + (GtSectors * GtCount);
        GrainOffset = (GdOffset + GdSectors + (GtSectors * GtCount) + GrainSectors - 1) / GrainSectors * GrainSectors;
    }

    /// <summary>The disk's size in sectors.</summary>
    public ulong Capacity { get; }

    public ulong GtSectors { get; }

    public ulong GtCount { get; }

    public ulong GdSectors { get; }

    public ulong RedundantGdOffset { get; }

    public ulong GdOffset { get; }

    /// <summary>The first sector of grain data (the header's overhead).</summary>
    public ulong GrainOffset { get; }

    /// <summary>The sector of grain table <paramref name="index"/> after the grain directory at <paramref name="directory"/>.</summary>
    public ulong GrainTable(ulong directory, ulong index) => directory + GdSectors + (index * GtSectors);

    /// <summary>The sparse header describing this layout.</summary>
    public VmdkSparseHeader Header(uint version, uint flags, ushort compressAlgorithm) => new(
        Version: version,
        Flags: flags,
        Capacity: Capacity,
        GrainSize: GrainSectors,
        DescriptorOffset: 1,
        DescriptorSize: DescriptorSectors,
        GtesPerGt: GtesPerGt,
        RedundantGdOffset: RedundantGdOffset,
        GdOffset: GdOffset,
        OverHead: GrainOffset,
        CompressAlgorithm: compressAlgorithm);

    /// <summary>Writes the grain directory at sector <paramref name="directory"/>, each entry pointing at its grain table, as qemu writes them all.</summary>
    public void WriteDirectory(SafeFileHandle handle, ulong directory, CancellationToken cancellationToken)
    {
        const int Chunk = 64 * 1024;
        ulong bytes = GdSectors * 512;
        byte[] buffer = new byte[Chunk];
        ulong entry = 0;
        for (ulong done = 0; done < bytes; done += Chunk)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int n = (int)Math.Min(Chunk, bytes - done);
            Array.Clear(buffer);
            for (int i = 0; i + 4 <= n && entry < GtCount; i += 4, entry++)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(i), checked((uint)GrainTable(directory, entry)));
            }

            RandomAccess.Write(handle, buffer.AsSpan(0, n), checked((long)((directory * 512) + done)));
        }
    }
}
