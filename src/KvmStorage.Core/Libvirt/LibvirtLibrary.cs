using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Libvirt;

/// <summary>
/// Loads libvirt.so.0 once, silences libvirt's default error printing, and turns libvirt's thread-local last error
/// into a <see cref="LibvirtException"/>.
/// </summary>
public static unsafe class LibvirtLibrary
{
    private static readonly object Gate = new();
    private static bool initialized;
    private static string? loadError;

    /// <summary>True when libvirt.so.0 can be loaded on this machine.</summary>
    public static bool IsAvailable
    {
        get
        {
            try
            {
                EnsureLoaded();
                return true;
            }
            catch (KvmStorageException)
            {
                return false;
            }
        }
    }

    /// <summary>Loads the library and installs the silent error handler; a clear typed error when it is absent.</summary>
    public static void EnsureLoaded()
    {
        lock (Gate)
        {
            if (!initialized && loadError is null)
            {
                try
                {
                    if (!NativeLibrary.TryLoad(LibvirtNative.Library, typeof(LibvirtLibrary).Assembly, null, out _))
                    {
                        loadError = $"The live backend needs {LibvirtNative.Library}, which could not be loaded. Install libvirt's client library (Debian: apt-get install libvirt0); the offline backend works without it.";
                    }
                    else
                    {
                        if (LibvirtNative.virInitialize() < 0)
                        {
                            loadError = $"{LibvirtNative.Library} failed to initialise.";
                        }


                        // libvirt's default handler prints every error to stderr; errors are read with
                        // virGetLastError instead. An UnmanagedCallersOnly function needs no delegate to keep alive.
                        LibvirtNative.virSetErrorFunc(IntPtr.Zero, &IgnoreError);
                        initialized = loadError is null;
                    }
                }
                catch (DllNotFoundException ex)
                {
                    loadError = $"The live backend needs {LibvirtNative.Library}: {ex.Message}";
                }
                catch (EntryPointNotFoundException ex)
                {
                    loadError = $"{LibvirtNative.Library} is too old for KvmStorage: {ex.Message}";
                }
            }

            if (loadError is not null)
            {
                throw new KvmStorageException(ErrorKind.ResourceUnavailable, LibvirtErrorIds.LibvirtUnavailable, loadError, LibvirtNative.Library);
            }
        }
    }

    /// <summary>The last libvirt error of this thread as an exception (call right after the failing call).</summary>
    internal static LibvirtException LastError(string function, object? target)
    {
        VirErrorView error = ReadLastError();
        return new LibvirtException(error.Code, error.Domain, error.Message ?? $"{function} failed without an error message.", function, target);
    }

    /// <summary>Throws the last error when <paramref name="result"/> is negative.</summary>
    internal static int Check(int result, string function, object? target)
    {
        if (result < 0)
        {
            throw LastError(function, target);
        }

        return result;
    }

    /// <summary>Throws the last error when the returned handle is null.</summary>
    internal static T Check<T>(T handle, string function, object? target)
        where T : SafeHandle
    {
        if (handle.IsInvalid)
        {
            handle.Dispose();
            throw LastError(function, target);
        }

        return handle;
    }

    private static VirErrorView ReadLastError()
    {
        LibvirtNative.VirErrorHead* error = LibvirtNative.virGetLastError();
        if (error is null)
        {
            return new VirErrorView(0, 0, null);
        }

        var view = new VirErrorView(error->Code, error->Domain, LibvirtNative.PeekString(error->Message));
        LibvirtNative.virResetLastError();
        return view;
    }

    [UnmanagedCallersOnly]
    private static void IgnoreError(IntPtr userData, IntPtr error)
    {
    }

    private readonly record struct VirErrorView(int Code, int Domain, string? Message);
}
