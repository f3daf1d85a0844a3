using System.Runtime.InteropServices;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Block;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Tests.Support;

/// <summary>
/// A test double of the block layer for raw files: data and holes from SEEK_DATA/SEEK_HOLE, reads with pread.
/// Counts the bytes read so tests can assert that holes are never read.
/// </summary>
internal sealed partial class RawFileBlockReader : IBlockReader
{
    private const int SeekData = 3;
    private const int SeekHole = 4;
    private readonly SafeFileHandle handle;
    private long bytesRead;

    public RawFileBlockReader(string path)
    {
        handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        ulong length = (ulong)RandomAccess.GetLength(handle);
        Size = length;
        Info = new ImageInfo { Path = Path.GetFullPath(path), ImageFormat = ImageFormat.Raw, VirtualSize = length, ActualSize = 0, FileLength = length };
    }

    public ImageInfo Info { get; }

    public ulong Size { get; }

    public long BytesRead => Interlocked.Read(ref bytesRead);

    public void Read(ulong offset, Span<byte> buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = RandomAccess.Read(handle, buffer[done..], (long)offset + done);
            if (n == 0)
            {
                buffer[done..].Clear();
                break;
            }

            done += n;
        }

        Interlocked.Add(ref bytesRead, buffer.Length);
    }

    public IEnumerable<Extent> GetExtents(ulong offset, ulong length)
    {
        ulong end = offset + length;
        ulong position = offset;
        int fd = (int)handle.DangerousGetHandle();
        while (position < end)
        {
            long data = lseek(fd, (long)position, SeekData);
            ulong dataStart = data < 0 ? end : Math.Min(end, (ulong)data);
            if (dataStart > position)
            {
                yield return new Extent(position, dataStart - position, ExtentKind.Zero);
                position = dataStart;
                if (position >= end)
                {
                    break;
                }
            }

            long hole = lseek(fd, (long)position, SeekHole);
            ulong dataEnd = hole < 0 ? end : Math.Min(end, (ulong)hole);
            yield return new Extent(position, dataEnd - position, ExtentKind.Data);
            position = dataEnd;
        }
    }

    public void Dispose() => handle.Dispose();

    [LibraryImport("libc", SetLastError = true)]
    private static partial long lseek(int fd, long offset, int whence);
}
