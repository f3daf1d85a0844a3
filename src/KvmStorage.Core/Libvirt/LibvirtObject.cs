using System.Runtime.InteropServices;

namespace KvmStorage.Core.Libvirt;

/// <summary>
/// A named libvirt object (pool, volume, domain) held through its handle: the name is read once, when the handle is
/// taken, and disposing frees the handle (libvirt's <c>vir*Free</c>).
/// </summary>
public abstract class LibvirtObject : IDisposable
{
    private readonly SafeHandle handle;

    /// <param name="handle">The object's handle, now owned by this object.</param>
    /// <param name="name">The <c>const char*</c> of <c>vir*GetName</c>, owned by libvirt (read, never freed).</param>
    private protected LibvirtObject(SafeHandle handle, IntPtr name)
    {
        this.handle = handle;
        Name = LibvirtNative.PeekString(name) ?? string.Empty;
    }

    public string Name { get; }

    public void Dispose()
    {
        handle.Dispose();
        GC.SuppressFinalize(this);
    }
}
