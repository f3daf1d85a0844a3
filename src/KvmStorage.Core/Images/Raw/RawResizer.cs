using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Raw;

/// <summary>Grows and shrinks raw files in place: a cancelled grow leaves the original length.</summary>
internal static class RawResizer
{
    public static void Resize(SafeFileHandle handle, string path, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ulong length = (ulong)RandomAccess.GetLength(handle);
        if (newSize < length)
        {
            if (!options.AllowShrink)
            {
                throw new KvmStorageException(ErrorKind.InvalidOperation, ImageErrorIds.ShrinkNotAllowed, $"Shrinking '{path}' from {length} to {newSize} bytes must be allowed explicitly.", path);
            }

            RandomAccess.SetLength(handle, (long)newSize);
        }
        else if (newSize > length)
        {
            FileSystemLimits.RequireFits(path, newSize);
            try
            {
                if (options.Preallocation == Preallocation.Full)
                {
                    // The new size first, then the zeros: a crash mid-way leaves the new size with part of the
                    // growth still sparse, never a file whose length is neither the old nor the new size.
                    FileSystemLimits.SetLength(handle, newSize, path);
                    PositionalFile.Flush(handle);
                }

                RawImageWriter.Allocate(handle, length, newSize, options.Preallocation, path, progress, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                // A cancelled grow leaves the original size, as if it had never started.
                RandomAccess.SetLength(handle, (long)length);
                throw;
            }
        }

        PositionalFile.Flush(handle);
    }
}
