using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Qcow2;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Check;

/// <summary>What <see cref="ImageOptimizer.Optimize"/> did.</summary>
public sealed record ImageOptimizeResult
{
    public required string Path { get; init; }

    /// <summary>qemu-img's name of the format (<c>qcow2</c>, <c>raw</c>, <c>vmdk</c>, …), the one spelling libvirt's XML uses too.</summary>
    public string Format => ImageFormat.ToQemuName();

    /// <summary>The format as the engine handles it.</summary>
    internal ImageFormat ImageFormat { get; init; }

    /// <summary>Host bytes allocated before and after (st_blocks × 512).</summary>
    public required ulong AllocatedBefore { get; init; }

    public required ulong AllocatedAfter { get; init; }

    public ulong BytesFreed => AllocatedBefore > AllocatedAfter ? AllocatedBefore - AllocatedAfter : 0;

    /// <summary>qcow2 data clusters that held only zeros and were dropped (0 for raw).</summary>
    public ulong ClustersFreed { get; init; }

    /// <summary>Whether the image was rewritten into a new file (-Compact).</summary>
    public bool Compacted { get; init; }
}

/// <summary>
/// Gives back the space of data that reads as zeros: holes punched in raw files, all-zero qcow2 clusters made
/// unallocated (or zero clusters over a backing file) and freed; with compaction, a fresh copy that replaces the file.
/// </summary>
public static class ImageOptimizer
{
    private const int HoleGranularity = 4096;
    private const int Chunk = 1024 * 1024;

    public static ImageOptimizeResult Optimize(string path, bool compact = false, IProgress<ImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string fullPath = Path.GetFullPath(path);
        using (ImageLock.AcquireForWrite(fullPath))
        {
            ulong before = Allocated(fullPath);
            ImageFormat format;
            ulong freedClusters = 0;
            using (SafeFileHandle handle = OpenWrite(fullPath))
            {
                format = ImageFormatRegistry.Detect(ImageInspector.ReadProbe(handle, fullPath)).Format;
                try
                {
                    switch (format)
                    {
                        case ImageFormat.Raw:
                            if (!compact)
                            {
                                PunchZeroRanges(handle, fullPath, progress, cancellationToken);
                            }

                            break;
                        case ImageFormat.Qcow2:
                            freedClusters = FreeZeroClusters(handle, fullPath, progress, cancellationToken);
                            break;
                        default:
                            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedFormat, fullPath, $"optimizing {format.ToQemuName()} images is not supported.");
                    }
                }
                catch (IOException e)
                {
                    throw new KvmStorageException(ErrorKind.WriteError, ImageErrorIds.ImageWriteFailed, $"Optimizing '{fullPath}' failed: {e.Message}", fullPath, e);
                }
            }

            bool rewritten = compact && Rewrite(fullPath, format, progress, cancellationToken);

            return new ImageOptimizeResult
            {
                Path = fullPath,
                ImageFormat = format,
                AllocatedBefore = before,
                AllocatedAfter = Allocated(fullPath),
                ClustersFreed = freedClusters,
                Compacted = rewritten,
            };
        }
    }

    private static ulong Allocated(string path) => FileStatus.Get(path).AllocatedBytes;

    private static SafeFileHandle OpenWrite(string path)
    {
        try
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw ImageErrors.FromIo(path, e);
        }
    }

    /// <summary>Punches holes over every 4 KiB-aligned run of zeros in the file's data (holes stay holes).</summary>
    private static void PunchZeroRanges(SafeFileHandle handle, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        using IBlockReader reader = BlockReaders.Open(path, new BlockOpenOptions { Format = ImageFormat.Raw, ForceShare = true });
        ulong size = (ulong)RandomAccess.GetLength(handle);
        byte[] buffer = new byte[Chunk];
        foreach (Extent extent in reader.GetExtents(0, reader.Size).Where(e => e.Kind == ExtentKind.Data).ToList())
        {
            for (ulong position = extent.Offset; position < extent.End; position += Chunk)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int length = (int)Math.Min(Chunk, extent.End - position);
                Span<byte> span = buffer.AsSpan(0, length);
                Qcow2Io.ReadExactly(handle, span, position, path);
                ulong runStart = 0, runLength = 0;
                for (int block = 0; block < length; block += HoleGranularity)
                {
                    int blockLength = Math.Min(HoleGranularity, length - block);
                    ulong at = position + (ulong)block;
                    bool zero = at % HoleGranularity == 0 && blockLength == HoleGranularity && !span.Slice(block, blockLength).ContainsAnyExcept((byte)0);
                    if (zero)
                    {
                        runStart = runLength == 0 ? at : runStart;
                        runLength += (ulong)blockLength;
                        continue;
                    }

                    Punch(handle, path, runStart, runLength);
                    runLength = 0;
                }

                Punch(handle, path, runStart, runLength);
                progress?.Report(new ImageProgress(position + (ulong)length, size));
            }
        }

        PositionalFile.Flush(handle);
    }

    private static void Punch(SafeFileHandle handle, string path, ulong offset, ulong length)
    {
        if (length == 0)
        {
            return;
        }

        if (!PositionalFile.TryPunchHole(handle, offset, length))
        {
            int errno = Marshal.GetLastPInvokeError();
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedOperation, path, $"the file system cannot punch holes ({Marshal.GetPInvokeErrorMessage(errno)}).");
        }
    }

    /// <summary>
    /// Drops all-zero data clusters of the active qcow2 tables. Only clusters and L2 tables with refcount 1 (copied
    /// flag) change, so snapshots keep their data. The L2 entries are durable before the refcounts drop (at worst a
    /// crash leaks the clusters), and the freed clusters are punched out of the file.
    /// </summary>
    private static ulong FreeZeroClusters(SafeFileHandle handle, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        Qcow2Header header = ReadQcow2Header(handle, path, out _);
        ulong cs = header.ClusterSize;

        // With a backing file an unallocated cluster would show the backing data: v3 marks it zero, v2 cannot.
        bool hasBacking = !string.IsNullOrEmpty(header.BackingFile);
        if (hasBacking && header.Version < 3)
        {
            return 0;
        }

        ulong replacement = hasBacking ? Qcow2Entries.ZeroFlag : 0;
        byte[] l1 = header.L1Size == 0 ? [] : Qcow2Io.ReadBytes(handle, header.L1TableOffset, (int)(header.L1Size * 8), path);
        byte[] l2 = new byte[cs];
        byte[] data = new byte[cs];
        var freed = new List<ulong>();
        for (uint i = 0; i < header.L1Size; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            progress?.Report(new ImageProgress((ulong)i * header.L2Span, header.L1Size * header.L2Span));
            ulong l1Entry = BinaryPrimitives.ReadUInt64BigEndian(l1.AsSpan((int)(i * 8)));
            ulong l2Offset = Qcow2Entries.HostOffset(l1Entry);
            if (l2Offset == 0 || !Qcow2Entries.IsCopied(l1Entry))
            {
                continue;
            }

            Qcow2Resizer.CheckCluster(l2Offset, cs, handle, path);
            Qcow2Io.ReadExactly(handle, l2, l2Offset, path);
            int before = freed.Count;
            for (int j = 0; j < l2.Length; j += 8)
            {
                ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan(j));
                ulong offset = Qcow2Entries.HostOffset(entry);
                if (Qcow2Entries.IsCompressed(entry) || !Qcow2Entries.IsCopied(entry) || Qcow2Entries.IsZero(entry) || offset == 0)
                {
                    continue;
                }

                ReadPadded(handle, data, offset);
                if (!data.AsSpan().ContainsAnyExcept((byte)0))
                {
                    BinaryPrimitives.WriteUInt64BigEndian(l2.AsSpan(j), replacement);
                    freed.Add(offset);
                }
            }

            if (freed.Count > before)
            {
                Qcow2Io.Write(handle, l2, l2Offset);
            }
        }

        if (freed.Count == 0)
        {
            return 0;
        }

        // qcow2.rst "Host cluster management": nothing may point at a cluster whose refcount drops to 0.
        PositionalFile.Flush(handle);
        var refcounts = new RefcountEditor(handle, path, header, (ulong)RandomAccess.GetLength(handle));
        foreach (ulong offset in freed)
        {
            refcounts.Free(offset / cs, 1);
        }

        PositionalFile.Flush(handle);
        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        foreach (ulong offset in freed)
        {
            Punch(handle, path, offset, Math.Min(cs, fileLength - Math.Min(fileLength, offset)));
        }

        return (ulong)freed.Count;
    }

    /// <summary>
    /// Reads a qcow2 header for optimizing: refused unless it is consistent (a check finds nothing) and of a kind
    /// this code rewrites (no extended L2, external data file or encryption).
    /// </summary>
    private static Qcow2Header ReadQcow2Header(SafeFileHandle handle, string path, out byte[] cluster0)
    {
        ImageCheckResult check = new Qcow2Checker(handle, path, null, CancellationToken.None).Run(ImageRepairMode.None);
        if (check.Errors > 0 || check.MarkedCorrupt || check.DirtyFlag)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, ImageErrorIds.ImageCorrupt, $"'{path}' has {check.Errors} error(s){(check.DirtyFlag ? " and the dirty bit set" : string.Empty)}; repair it with 'Test-Volume -Repair All' first.", path);
        }

        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        byte[] head = Qcow2Io.ReadBytes(handle, 0, (int)Math.Min(64UL * 1024, fileLength), path);
        Qcow2Header header = Qcow2Reader.ReadHeader(handle, head, fileLength, path);
        if (header.ExtendedL2 || header.DataFile is not null || (header.IncompatibleFeatures & Qcow2Header.IncompatDataFile) != 0 || header.CryptMethod != 0)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedOperation, path, "optimizing qcow2 images with extended L2 entries, an external data file or encryption is not supported.");
        }

        cluster0 = new byte[header.ClusterSize];
        ReadPadded(handle, cluster0, 0);
        return header;
    }

    private static void ReadPadded(SafeFileHandle handle, Span<byte> buffer, ulong offset) => PositionalFile.ReadZeroPadded(handle, buffer, offset);

    /// <summary>
    /// Writes a compact copy under a hidden temporary name, then renames it over the image, unless the copy is no
    /// smaller (an empty or already compact image: the fresh layout may take a cluster more); then the image is kept.
    /// </summary>
    /// <returns>True when the image was replaced by the compact copy.</returns>
    private static bool Rewrite(string path, ImageFormat format, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        string directory = Path.GetDirectoryName(path)!;

        // What a killed compaction left behind: hidden, but as large as the image.
        AtomicFile.RemoveAbandonedTempFiles(directory);
        string temp = AtomicFile.TempPathFor(path);
        FileStatus status = FileStatus.Get(path);
        try
        {
            using (SafeFileHandle source = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
            // Owner-only until complete: the image's data must not be readable by others while it is copied. Marked
            // alive until closed (AtomicFile.RemoveAbandonedTempFiles leaves it).
            using (FileStream stream = AtomicFile.CreateTemp(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite))
            {
                SafeFileHandle target = stream.SafeFileHandle;
                if (format == ImageFormat.Raw)
                {
                    CopySparse(source, target, path, progress, cancellationToken);
                }
                else
                {
                    Qcow2Compactor.Write(source, target, path, progress, cancellationToken);
                }

                PositionalFile.Flush(target);
                FileStatus copy = FileStatus.Get(temp);
                if (copy.AllocatedBytes >= status.AllocatedBytes && copy.Length >= status.Length)
                {
                    File.Delete(temp);
                    return false;
                }

                File.SetUnixFileMode(target, (UnixFileMode)(status.Mode & 0xFFF));
                _ = NativeMethods.chown(temp, (int)status.Uid, (int)status.Gid);

                // Renamed while the lock is still held, so no cleaner can take the finished temporary for abandoned.
                File.Move(temp, path, overwrite: true);
                AtomicFile.SyncDirectory(directory);
                return true;
            }
        }
        catch
        {
            try
            {
                File.Delete(temp);
            }
            catch (IOException)
            {
            }

            throw;
        }
    }

    private static void CopySparse(SafeFileHandle source, SafeFileHandle target, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ulong size = (ulong)RandomAccess.GetLength(source);
        RandomAccess.SetLength(target, (long)size);
        using IBlockReader reader = BlockReaders.Open(path, new BlockOpenOptions { Format = ImageFormat.Raw, ForceShare = true });
        byte[] buffer = new byte[Chunk];
        foreach (Extent extent in reader.GetExtents(0, reader.Size).Where(e => e.Kind == ExtentKind.Data).ToList())
        {
            for (ulong position = extent.Offset; position < extent.End; position += Chunk)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int length = (int)Math.Min(Chunk, extent.End - position);
                Span<byte> span = buffer.AsSpan(0, length);
                Qcow2Io.ReadExactly(source, span, position, path);
                for (int block = 0; block < length; block += HoleGranularity)
                {
                    ReadOnlySpan<byte> piece = span.Slice(block, Math.Min(HoleGranularity, length - block));
                    if (piece.ContainsAnyExcept((byte)0))
                    {
                        RandomAccess.Write(target, piece, (long)position + block);
                    }
                }

                progress?.Report(new ImageProgress(position + (ulong)length, size));
            }
        }
    }

    /// <summary>A fresh qcow2 holding the active image only: header, refcounts, L1, L2 tables, then data in guest order.</summary>
    private static class Qcow2Compactor
    {
        public static void Write(SafeFileHandle source, SafeFileHandle target, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
        {
            Qcow2Header header = ReadQcow2Header(source, path, out byte[] cluster0);
            if (header.SnapshotCount > 0 || header.HasBitmaps)
            {
                throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedOperation, path, "compacting qcow2 images with internal snapshots or persistent bitmaps is not supported.");
            }

            ulong cs = header.ClusterSize;
            int bits = header.ClusterBits;
            ulong entries = header.L2Entries;
            byte[] l1 = header.L1Size == 0 ? [] : Qcow2Io.ReadBytes(source, header.L1TableOffset, (int)(header.L1Size * 8), path);

            // The new L2 entries by L1 index: data clusters are numbered in guest order and placed later.
            var tables = new SortedDictionary<uint, ulong[]>();
            var dataSources = new List<(ulong Guest, ulong Entry)>();
            byte[] l2 = new byte[cs];
            for (uint i = 0; i < header.L1Size; i++)
            {
                ulong l2Offset = Qcow2Entries.HostOffset(BinaryPrimitives.ReadUInt64BigEndian(l1.AsSpan((int)(i * 8))));
                if (l2Offset == 0)
                {
                    continue;
                }

                Qcow2Io.ReadExactly(source, l2, l2Offset, path);
                ulong[]? table = null;
                for (ulong j = 0; j < entries; j++)
                {
                    ulong entry = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((int)(j * 8)));
                    if (entry == 0)
                    {
                        continue;
                    }

                    table ??= new ulong[entries];
                    if (!Qcow2Entries.IsCompressed(entry) && Qcow2Entries.IsZero(entry))
                    {
                        // Zero clusters stay zero clusters, without their preallocated space.
                        table[j] = Qcow2Entries.ZeroFlag;
                        continue;
                    }

                    if (!Qcow2Entries.IsCompressed(entry) && Qcow2Entries.HostOffset(entry) == 0)
                    {
                        continue;
                    }

                    table[j] = ulong.MaxValue;
                    dataSources.Add((((ulong)i * entries) + j, entry));
                }

                if (table is not null)
                {
                    tables[i] = table;
                }
            }

            ulong l1Clusters = Math.Max(1, Qcow2Layout.CeilDiv((ulong)header.L1Size * 8, cs));
            ulong perBlock = Qcow2Entries.RefcountsPerBlock(header.ClusterSize, header.RefcountBits);
            ulong tableClusters = 1, blocks = 1;
            while (true)
            {
                ulong all = 1 + tableClusters + blocks + l1Clusters + (ulong)tables.Count + (ulong)dataSources.Count;
                ulong needBlocks = Qcow2Layout.CeilDiv(all, perBlock);
                ulong needTable = Qcow2Layout.CeilDiv(needBlocks * 8, cs);
                if (needBlocks <= blocks && needTable <= tableClusters)
                {
                    break;
                }

                blocks = Math.Max(blocks, needBlocks);
                tableClusters = Math.Max(tableClusters, needTable);
            }

            ulong tableOffset = cs;
            ulong blocksOffset = tableOffset + (tableClusters * cs);
            ulong l1Offset = blocksOffset + (blocks * cs);
            ulong l2Start = l1Offset + (l1Clusters * cs);
            ulong dataStart = l2Start + ((ulong)tables.Count * cs);
            ulong total = 1 + tableClusters + blocks + l1Clusters + (ulong)tables.Count + (ulong)dataSources.Count;

            // Data, in guest order; compressed clusters are read decompressed through the block layer.
            using IBlockReader? reader = dataSources.Any(d => Qcow2Entries.IsCompressed(d.Entry))
                ? BlockReaders.Open(path, new BlockOpenOptions { Format = ImageFormat.Qcow2, ForceShare = true })
                : null;
            byte[] data = new byte[cs];
            ulong next = dataStart;
            var placed = new Dictionary<ulong, ulong>();
            foreach ((ulong guest, ulong entry) in dataSources)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (Qcow2Entries.IsCompressed(entry))
                {
                    ulong guestOffset = guest << bits;
                    int length = (int)Math.Min(cs, reader!.Size - guestOffset);
                    Array.Clear(data);
                    reader.Read(guestOffset, data.AsSpan(0, length));
                }
                else
                {
                    ReadPadded(source, data, Qcow2Entries.HostOffset(entry));
                }

                RandomAccess.Write(target, data, (long)next);
                placed[guest] = next;
                next += cs;
                progress?.Report(new ImageProgress(next - dataStart, (ulong)dataSources.Count * cs));
            }

            byte[] l1Out = new byte[l1Clusters * cs];
            ulong l2At = l2Start;
            byte[] l2Out = new byte[cs];
            foreach ((uint index, ulong[] table) in tables)
            {
                for (ulong j = 0; j < entries; j++)
                {
                    ulong value = table[j] == ulong.MaxValue ? Qcow2Entries.Owned(placed[((ulong)index * entries) + j]) : table[j];
                    BinaryPrimitives.WriteUInt64BigEndian(l2Out.AsSpan((int)(j * 8)), value);
                }

                RandomAccess.Write(target, l2Out, (long)l2At);
                BinaryPrimitives.WriteUInt64BigEndian(l1Out.AsSpan((int)(index * 8)), Qcow2Entries.Owned(l2At));
                l2At += cs;
            }

            RandomAccess.Write(target, l1Out, (long)l1Offset);
            byte[] refTable = new byte[tableClusters * cs];
            byte[] block = new byte[cs];
            for (ulong b = 0; b < blocks; b++)
            {
                Array.Clear(block);
                for (ulong k = 0; k < perBlock && (b * perBlock) + k < total; k++)
                {
                    Qcow2Entries.WriteRefcount(block, k, header.RefcountBits, 1);
                }

                RandomAccess.Write(target, block, (long)(blocksOffset + (b * cs)));
                BinaryPrimitives.WriteUInt64BigEndian(refTable.AsSpan((int)(b * 8)), blocksOffset + (b * cs));
            }

            RandomAccess.Write(target, refTable, (long)tableOffset);

            // Cluster 0 as it was (extensions, backing name), with the new table positions and no snapshots.
            BinaryPrimitives.WriteUInt64BigEndian(cluster0.AsSpan(40), l1Offset);
            BinaryPrimitives.WriteUInt64BigEndian(cluster0.AsSpan(48), tableOffset);
            BinaryPrimitives.WriteUInt32BigEndian(cluster0.AsSpan(56), (uint)tableClusters);
            BinaryPrimitives.WriteUInt32BigEndian(cluster0.AsSpan(60), 0);
            BinaryPrimitives.WriteUInt64BigEndian(cluster0.AsSpan(64), 0);
            RandomAccess.Write(target, cluster0, 0);
            RandomAccess.SetLength(target, (long)Math.Max(next, dataStart));
        }
    }
}
