using System.Runtime.CompilerServices;
using System.Buffers.Binary;
using System.Numerics;
using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// A qcow2 output laid out like <c>qemu-img convert -O qcow2</c>: header, refcount table,
/// first refcount block and L1 in the first clusters; then L2 tables and data clusters appended in guest order,
/// each L2 table allocated when first needed. Memory stays bounded whatever the size: data arrives in guest order,
/// so an L2 table is complete once the guest offset passes it, and a refcount block once allocation passes its range;
/// both are written then. The L1 table, refcount table and header are written last. An encrypted output has its LUKS
/// header area after the L1 table (where qemu-img puts it) and its data clusters encrypted with their host sector as
/// tweak, here in the writer, since only the writer knows where a cluster lands.
/// </summary>
internal sealed class Qcow2ConvertTarget : ConvertTarget
{
    private const int CoalesceBytes = 4 * 1024 * 1024;

    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly ulong size;
    private readonly int version;
    private readonly ImageCreateOptions headerOptions;
    private readonly CompressionType? compression;
    private readonly Qcow2Layout full;
    private readonly uint cs;
    private readonly Qcow2Entries.CompressedDescriptor compressedDescriptor;
    private readonly ulong l2Entries;
    private readonly ulong perBlock;
    private readonly ulong[] l1;
    private readonly ulong[] reftable;
    private readonly Dictionary<ulong, byte[]> openBlocks = [];
    private readonly byte[] l2;
    private readonly WriteCoalescer coalescer;
    private readonly ImageEncryption? encryption;
    private Luks.XtsAes? cipher;
    private Qcow2Layout front = null!;
    private long currentL1 = -1;
    private ulong currentL2Offset;
    private ulong nextCluster;
    private ulong compressedCursor;

    public Qcow2ConvertTarget(SafeFileHandle handle, string path, ulong size, uint clusterSize, int version, CompressionType? compression, string? backingFile, ImageFormat? backingFormat, ImageEncryption? encryption = null)
    {
        this.encryption = encryption;
        this.handle = handle;
        this.path = path;
        this.size = size;
        this.version = version;
        this.compression = compression;
        cs = clusterSize;
        int clusterBits = BitOperations.Log2(clusterSize);
        compressedDescriptor = new Qcow2Entries.CompressedDescriptor(clusterBits);
        ulong cryptoLength = encryption is null ? 0 : Luks.LuksHeader.LayoutSector((uint)encryption.Luks.KeyBytes, Luks.LuksHeader.SlotCount) * 512UL;
        full = Qcow2Layout.Compute(size, clusterBits, 16, mapAllData: true, path, cryptoLength);
        l2Entries = cs / 8UL;
        perBlock = Qcow2Entries.RefcountsPerBlock(cs, 16);
        l1 = new ulong[full.L1Size];
        reftable = new ulong[full.RefcountTableClusters * cs / 8];
        l2 = new byte[cs];
        coalescer = new WriteCoalescer(handle, CoalesceBytes);
        headerOptions = new ImageCreateOptions { Format = ImageFormat.Qcow2, VirtualSize = size, BackingFile = backingFile, BackingFormat = backingFormat };
        Compressor = compression is { } type ? ClusterCompressor.For(type) : null;
        ZeroUnitState = backingFile is null ? UnitState.Skip : version >= 3 ? UnitState.ZeroFlag : UnitState.Data;
    }

    public override int Unit => (int)cs;

    public override ClusterCompressor? Compressor { get; }

    // qemu keeps a compressed cluster only if it fits in cluster_size - 1 bytes (qcow2_co_pwritev_compressed_task).
    public override int CompressLimit => (int)cs;

    public override UnitState ZeroUnitState { get; }

    public override bool SupportsZeroFlag => version >= 3;

    public override void Begin(CancellationToken cancellationToken)
    {
        // Enough refcount blocks up front to cover the header, the refcount table, themselves, the L1 table and the LUKS area.
        ulong fixedClusters = 1 + full.RefcountTableClusters + full.L1Clusters + full.CryptoClusters;
        ulong blocks = 1;
        while (Qcow2Layout.CeilDiv(fixedClusters + blocks, perBlock) > blocks)
        {
            blocks++;
        }

        front = Qcow2Layout.ForAppend(full, blocks);
        for (ulong b = 0; b < blocks; b++)
        {
            reftable[b] = front.RefcountBlocksOffset + (b * cs);
            openBlocks[b] = new byte[cs];
        }

        nextCluster = fixedClusters + blocks;
        for (ulong c = 0; c < nextCluster; c++)
        {
            AddRef(c);
        }

        if (encryption is not null)
        {
            (_, byte[] area, cipher) = Luks.LuksKeys.Create(encryption.Luks, encryption.Passphrase, path);
            Qcow2ImageWriter.WriteLuksArea(handle, front, area);
        }
    }

    public override void Write(ConvertChunk chunk)
    {
        int i = 0;
        while (i < chunk.UnitCount)
        {
            ulong guestCluster = chunk.UnitOffset(i) / cs;
            switch (chunk.States[i])
            {
                case UnitState.Data:
                {
                    // A run of data clusters: allocate each (an L2 table or refcount block may slip in between), write runs that are contiguous on disk.
                    int runStart = i;
                    ulong runHost = 0;
                    while (i < chunk.UnitCount && chunk.States[i] == UnitState.Data)
                    {
                        EnsureL2(chunk.UnitOffset(i) / cs);
                        ulong host = AllocateCluster(countReference: true);
                        SetL2(chunk.UnitOffset(i) / cs, Qcow2Entries.Owned(host * cs));
                        if (i > runStart && host != runHost + (ulong)(i - runStart))
                        {
                            WriteData(chunk, runStart, i, runHost);
                            runStart = i;
                        }

                        if (i == runStart)
                        {
                            runHost = host;
                        }

                        i++;
                    }

                    WriteData(chunk, runStart, i, runHost);
                    continue;
                }

                case UnitState.Compressed:
                {
                    ReadOnlySpan<byte> payload = chunk.UnitPayload(i);
                    EnsureL2(guestCluster);
                    ulong offset = PlaceCompressed(payload.Length);
                    coalescer.Write(offset, payload);
                    SetL2(guestCluster, compressedDescriptor.Encode(offset, payload.Length));
                    break;
                }

                case UnitState.ZeroFlag:
                    EnsureL2(guestCluster);
                    SetL2(guestCluster, Qcow2Entries.ZeroFlag);
                    break;
            }

            i++;
        }
    }

    // Loops over every entry or unit: optimised on first use (see Qcow2Checker.Analysis.CheckL2).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public override void Complete(CancellationToken cancellationToken)
    {
        coalescer.Flush();
        FlushL2();
        compressedCursor = 0;

        // Every cluster up to the allocation point exists in the file, so compressed data never ends short of a sector read.
        RandomAccess.SetLength(handle, (long)(nextCluster * cs));
        foreach ((ulong block, byte[] buffer) in openBlocks)
        {
            ImageIo.Write(handle, buffer, reftable[block]);
        }

        openBlocks.Clear();
        if (l1.Length > 0)
        {
            // qemu writes the L1 entries only, not the rest of their cluster.
            byte[] table = new byte[l1.Length * 8];
            for (int i = 0; i < l1.Length; i++)
            {
                BinaryPrimitives.WriteUInt64BigEndian(table.AsSpan(i * 8), l1[i]);
            }

            ImageIo.Write(handle, table, front.L1Offset);
        }

        byte[] refTable = new byte[reftable.Length * 8];
        for (int i = 0; i < reftable.Length; i++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(refTable.AsSpan(i * 8), reftable[i]);
        }

        ImageIo.Write(handle, refTable, front.RefcountTableOffset);
        cancellationToken.ThrowIfCancellationRequested();

        // The header last: until it is written the file is not a qcow2 image at all.
        byte[] header = Qcow2ImageWriter.BuildHeader(front, size, version, headerOptions, path);
        if (compression == CompressionType.Zstd)
        {
            // Incompatible feature bit 3 announces the compression type byte at 104 (qcow2.rst).
            ulong incompatible = BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(72)) | Qcow2Header.IncompatCompression;
            BinaryPrimitives.WriteUInt64BigEndian(header.AsSpan(72), incompatible);
            header[104] = 1;
        }

        ImageIo.Write(handle, header, 0);
    }

    private void WriteData(ConvertChunk chunk, int from, int to, ulong host)
    {
        if (to > from)
        {
            coalescer.Flush();
            Span<byte> data = chunk.Data.AsSpan(from * (int)cs, (to - from) * (int)cs);
            cipher?.Encrypt(data, host * cs / 512);
            ImageIo.Write(handle, data, host * cs);
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            cipher?.Dispose();
        }

        base.Dispose(disposing);
    }

    private void EnsureL2(ulong guestCluster)
    {
        long index = (long)(guestCluster / l2Entries);
        if (index == currentL1)
        {
            return;
        }

        FlushL2();
        currentL1 = index;
        Array.Clear(l2);
        currentL2Offset = AllocateCluster(countReference: true) * cs;
        l1[index] = Qcow2Entries.Owned(currentL2Offset);
    }

    private void SetL2(ulong guestCluster, ulong entry) =>
        BinaryPrimitives.WriteUInt64BigEndian(l2.AsSpan((int)(guestCluster % l2Entries * 8)), entry);

    private void FlushL2()
    {
        if (currentL1 >= 0)
        {
            ImageIo.Write(handle, l2, currentL2Offset);
            currentL1 = -1;
        }
    }

    /// <summary>Takes the next cluster at the end of the file.</summary>
    private ulong AllocateCluster(bool countReference)
    {
        ulong cluster = nextCluster;
        ulong block = cluster / perBlock;
        if (reftable[block] == 0)
        {
            // Entering a range no refcount block covers yet: the new block takes the range's first cluster and counts itself.
            reftable[block] = cluster * cs;
            openBlocks[block] = new byte[cs];
            AddRef(cluster);
            cluster++;
        }

        nextCluster = cluster + 1;
        if (countReference)
        {
            AddRef(cluster);
        }

        FlushFinishedBlocks();
        return cluster;
    }

    /// <summary>
    /// Finds room for a compressed payload as qemu's qcow2_alloc_bytes does: byte-adjacent to the previous one, spilling
    /// into the next cluster only when that is the next one at the end of the file; every cluster it touches gains a reference.
    /// </summary>
    private ulong PlaceCompressed(int length)
    {
        ulong offset = compressedCursor;
        ulong free = offset == 0 ? 0 : cs - (offset % cs);
        if (offset == 0 || (ulong)length > free)
        {
            bool canSpill = offset != 0 && offset / cs + 1 == nextCluster && reftable[nextCluster / perBlock] != 0;
            if (canSpill)
            {
                _ = AllocateCluster(countReference: false);
            }
            else
            {
                offset = AllocateCluster(countReference: false) * cs;
            }
        }

        ulong end = offset + (ulong)length;
        for (ulong c = offset / cs; c <= (end - 1) / cs; c++)
        {
            AddRef(c);
        }

        compressedCursor = end % cs == 0 ? 0 : end;
        FlushFinishedBlocks();
        return offset;
    }

    private void AddRef(ulong cluster)
    {
        byte[] block = openBlocks[cluster / perBlock];
        ulong index = cluster % perBlock;
        ulong count = Qcow2Entries.ReadRefcount(block, index, 16) + 1;
        if (count > ushort.MaxValue)
        {
            throw new InvalidOperationException($"Refcount overflow on cluster {cluster} of '{path}'.");
        }

        Qcow2Entries.WriteRefcount(block, index, 16, count);
    }

    /// <summary>Writes the refcount blocks no later allocation can touch any more.</summary>
    private void FlushFinishedBlocks()
    {
        ulong lowestLive = nextCluster / perBlock;
        if (compressedCursor != 0)
        {
            lowestLive = Math.Min(lowestLive, compressedCursor / cs / perBlock);
        }

        if (openBlocks.Count <= 1)
        {
            return;
        }

        foreach (ulong block in openBlocks.Keys.Where(b => b < lowestLive).ToList())
        {
            ImageIo.Write(handle, openBlocks[block], reftable[block]);
            openBlocks.Remove(block);
        }
    }
}
