using System.Diagnostics;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

public sealed class ImageLockTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [SkippableFact]
    public void A_running_qemu_writer_makes_the_image_busy()
    {
        string qemuIo = ExternalTool.Require("qemu-io");
        string path = temp.Combine("busy.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = 1 << 20 });

        // Interactive qemu-io keeps the image open read-write (with QEMU's locks) until its stdin closes.
        var start = new ProcessStartInfo(qemuIo) { RedirectStandardInput = true, RedirectStandardOutput = true, UseShellExecute = false };
        start.ArgumentList.Add("-f");
        start.ArgumentList.Add("qcow2");
        start.ArgumentList.Add(path);
        using Process process = Process.Start(start)!;
        try
        {
            Assert.True(WaitUntilBusy(path), "qemu-io never took its locks");
            var read = Assert.Throws<KvmStorageException>(() => ImageLock.EnsureNotInUse(path, forWrite: false));
            Assert.Equal(ErrorKind.ResourceBusy, read.Kind);
            Assert.Equal(ImageErrorIds.ImageInUse, read.ErrorId);
            Assert.Equal(ImageErrorIds.ImageInUse, Assert.Throws<KvmStorageException>(() => ImageInspector.Inspect(path)).ErrorId);
            Assert.Equal(ImageErrorIds.ImageInUse, Assert.Throws<KvmStorageException>(() => ImageLock.AcquireForWrite(path)).ErrorId);
            Assert.Equal(ImageErrorIds.ImageInUse, Assert.Throws<KvmStorageException>(() => ImageResizer.Resize(path, 2 << 20, new ImageResizeOptions())).ErrorId);

            // Like qemu-img info -U.
            Assert.Equal(1UL << 20, ImageInspector.Inspect(path, new ImageInspectOptions { ForceShare = true }).VirtualSize);
        }
        finally
        {
            process.StandardInput.Close();
            if (!process.WaitForExit(10_000))
            {
                process.Kill();
            }
        }

        ImageLock.EnsureNotInUse(path, forWrite: true);
    }

    [SkippableFact]
    public void Our_write_lock_refuses_a_second_writer_and_qemu()
    {
        string path = temp.Combine("mine.qcow2");
        ImageCreator.Create(path, new ImageCreateOptions { VirtualSize = 1 << 20 });
        using (ImageLock.AcquireForWrite(path))
        {
            Assert.Equal(ImageErrorIds.ImageInUse, Assert.Throws<KvmStorageException>(() => ImageLock.AcquireForWrite(path)).ErrorId);
            Assert.Equal(ImageErrorIds.ImageInUse, Assert.Throws<KvmStorageException>(() => ImageLock.EnsureNotInUse(path, forWrite: false)).ErrorId);
            ExternalTool.Require("qemu-img");
            ExternalTool.Result info = ExternalTool.Run("qemu-img", "info", path);
            Assert.NotEqual(0, info.ExitCode);
            Assert.Contains("lock", info.Stderr, StringComparison.Ordinal);
            ExternalTool.Result write = ExternalTool.Run("qemu-io", "-c", "write 0 4k", path);
            Assert.Contains("lock", write.Stderr + write.Stdout, StringComparison.Ordinal);
        }

        using (ImageLock.AcquireForWrite(path))
        {
            // Released on dispose: a new writer gets the lock.
        }

        ImageLock.EnsureNotInUse(path, forWrite: true);
    }

    private static bool WaitUntilBusy(string path)
    {
        var wait = Stopwatch.StartNew();
        while (wait.Elapsed < TimeSpan.FromSeconds(20))
        {
            try
            {
                ImageLock.EnsureNotInUse(path, forWrite: true);
            }
            catch (KvmStorageException e) when (e.ErrorId == ImageErrorIds.ImageInUse)
            {
                return true;
            }

            Thread.Sleep(50);
        }

        return false;
    }
}
